"""Programmatic dependent launch (flashcore._pdl) changes when kernels start, never what they compute: with it on,
the engine's tokens and logits and decode attention's output are bitwise those with it off. A kernel that touched
the previous kernel's output before its wait would show here as a race."""
import os
import subprocess
import sys

import pytest
import torch

from flashcore import _pdl, decode_attention
from flashcore import decode as decode_module
from integration.engine import FlashCoreEngine
from integration.models import llama31_8b


@pytest.fixture
def pdl_setting():
    saved = _pdl.ENABLED
    yield
    _pdl.ENABLED = saved


def test_pdl_is_off_off_the_gpu(pdl_setting):
    _pdl.ENABLED = True
    assert not _pdl.enabled(torch.device("cpu"))


def test_pdl_kernels_wait_before_their_first_memory_access():
    """The waits are what make PDL safe, and a compiler may move memory accesses: read the order in the PTX."""
    script = os.path.join(os.path.dirname(__file__), "pdl_ptx_check.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=root)
    run = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 10 and all(line.endswith(" ok") for line in lines), run.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                    reason="PDL needs a Hopper or newer GPU")
def test_engine_is_bitwise_the_same_with_pdl(pdl_setting):
    """8B-shaped layers, 24 greedy tokens through the captured graphs at batch 1, 2 and 3 (left-padded): the
    persistent GEMVs, the tiled one and the RMSNorm kernel in turn."""
    model = llama31_8b(dtype=torch.float16, num_layers=3)
    ids = torch.randint(0, 128000, (3, 40), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(ids)
    mask[1, :13] = 0
    mask[2, :5] = 0
    outputs = {}
    for enabled in (False, True, False, True):
        _pdl.ENABLED = enabled
        engine = FlashCoreEngine(model, max_batch_size=3, max_seq_len=128)
        for batch in (1, 2, 3):
            tokens = engine.generate(ids[:batch], attention_mask=mask[:batch], max_new_tokens=24, eos_token_id=[])
            logits = engine.engine.program_for(batch).buffers.logits.clone()
            outputs.setdefault((enabled, batch), []).append((tokens, logits))
        del engine
    for (enabled, batch), runs in outputs.items():
        for tokens, logits in runs:
            assert torch.equal(tokens, outputs[(False, batch)][0][0]), (enabled, batch)
            assert torch.equal(logits, outputs[(False, batch)][0][1]), (enabled, batch)
    launched_with_pdl = [compiled.metadata.launch_pdl for compiled, _ in decode_module._split_launch.compiled.values()]
    assert True in launched_with_pdl and False in launched_with_pdl


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                    reason="PDL needs a Hopper or newer GPU")
@pytest.mark.parametrize("kv_len, splits", [(300, 1), (2048, 16), (5000, 33)])
def test_decode_attention_is_bitwise_the_same_with_pdl(pdl_setting, kv_len, splits):
    gen = torch.Generator(device="cuda").manual_seed(kv_len)
    query = torch.randn(2, 32, 1, 128, dtype=torch.float16, device="cuda", generator=gen)
    key = torch.randn(2, 8, kv_len + 7, 128, dtype=torch.float16, device="cuda", generator=gen)
    value = torch.randn_like(key)
    kv_lens = torch.tensor([kv_len, kv_len // 2], dtype=torch.int32, device="cuda")
    kv_start = torch.tensor([0, 5], dtype=torch.int32, device="cuda")
    results = []
    for enabled in (False, True):
        _pdl.ENABLED = enabled
        results.append(decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, splits=splits))
    assert torch.equal(results[0], results[1])
