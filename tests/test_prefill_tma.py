"""The Hopper (TMA) prefill kernel: the same acceptance rule as the pointer kernel, and the fallback rules.

On a machine without CUDA the interpreter runs the TMA kernel's descriptor loads and stores too (zero-filling
out-of-bounds tiles as the hardware does), so these tests force it on in place of the GPU check.
"""
import pytest
import torch

from flashcore import prefill_attention, prefill_tma
from flashcore.testing import cpu_cases, run_case

from conftest import DEVICE, ON_GPU


@pytest.fixture
def tma_forced(monkeypatch):
    """The TMA kernel for every 16-bit call, whatever the device (the interpreter emulates its descriptors)."""
    monkeypatch.setattr(prefill_tma, "hopper_or_newer", lambda device: True)
    monkeypatch.setattr(prefill_tma, "ENABLED", True)


def _launches(monkeypatch):
    calls = []
    real = prefill_tma.launch
    monkeypatch.setattr(prefill_tma, "launch", lambda *a: calls.append(a) or real(*a))
    return calls


TMA_CASES = [c for c in cpu_cases() if c.kind == "prefill" and c.dtype == "float16"]


@pytest.mark.skipif(ON_GPU, reason="on a GPU the test matrix runs the TMA kernel itself")
@pytest.mark.parametrize("case", TMA_CASES, ids=lambda c: f"h{c.q_heads}x{c.kv_heads}-d{c.head_dim}-"
                         f"{c.q_len}of{c.kv_len}-{'c' if c.causal else 'nc'}{'-strided' if c.strided else ''}"
                         f"{'-ragged' if c.ragged else ''}")
def test_tma_kernel_matches_reference(case, tma_forced, monkeypatch):
    calls = _launches(monkeypatch)
    row = run_case(case, DEVICE)
    assert calls, "the TMA kernel did not run"
    assert row["passed"], f"err {row['err']:.3g} > 2 x torch err {row['torch_err']:.3g} + 1e-5"


def test_keys_outside_the_valid_range_are_never_read(tma_forced, monkeypatch):
    """NaN in the cache before kv_start and from kv_lens on stays out of the output: the descriptors' bounds
    zero-fill those rows, as the pointer kernel's load masks do."""
    calls = _launches(monkeypatch)
    q = torch.randn(2, 4, 9, 64, dtype=torch.float16, device=DEVICE)
    k = torch.randn(2, 2, 80, 64, dtype=torch.float16, device=DEVICE)
    v = torch.randn_like(k)
    lens = torch.tensor([80, 50], dtype=torch.int32, device=DEVICE)
    start = torch.tensor([0, 21], dtype=torch.int32, device=DEVICE)
    k[1, :, 50:] = v[1, :, 50:] = float("nan")
    k[1, :, :21] = v[1, :, :21] = float("nan")
    out = prefill_attention(q, k, v, kv_lens=lens, kv_start=start)
    assert calls and torch.isfinite(out).all()
    prefill_tma.ENABLED = False
    pointer = prefill_attention(q, k, v, kv_lens=lens, kv_start=start)
    assert (out.float() - pointer.float()).abs().max() < 2e-3


def test_lse_and_padded_rows_match_the_pointer_kernel(tma_forced, monkeypatch):
    calls = _launches(monkeypatch)
    q = torch.randn(1, 2, 6, 64, dtype=torch.float16, device=DEVICE)
    k = torch.randn(1, 1, 6, 64, dtype=torch.float16, device=DEVICE)
    start = torch.tensor([3], dtype=torch.int32, device=DEVICE)
    out, lse = prefill_attention(q, k, k, kv_start=start, return_lse=True)
    assert calls
    assert out[:, :, :3].abs().max() == 0 and torch.isinf(lse[:, :, :3]).all()  # rows of left padding
    prefill_tma.ENABLED = False
    want, want_lse = prefill_attention(q, k, k, kv_start=start, return_lse=True)
    assert (out.float() - want.float()).abs().max() < 1e-3
    assert (lse[:, :, 3:] - want_lse[:, :, 3:]).abs().max() < 1e-4


def test_fallback_to_the_pointer_kernel(tma_forced, monkeypatch):
    """fp32, a head_dim stride other than 1 and an unaligned view go to the pointer kernel; 16-bit aligned
    views (a cache slice, HF's transposed layout) take the TMA kernel."""
    calls = _launches(monkeypatch)
    q = torch.randn(1, 4, 8, 64, device=DEVICE)
    prefill_attention(q, q[:, :2], q[:, :2])
    assert not calls  # fp32
    h = q.half()
    prefill_attention(h, h[:, :2].transpose(2, 3).contiguous().transpose(2, 3), h[:, :2])
    assert not calls  # keys with a head_dim stride of 8
    flat = torch.randn(4 * 8 * 64 + 1, dtype=torch.float16, device=DEVICE)[1:].view(1, 4, 8, 64)
    prefill_attention(flat, h[:, :2], h[:, :2])
    assert not calls  # a query 2 bytes off 16-byte alignment
    q_hf = torch.randn(1, 8, 4, 64, dtype=torch.float16, device=DEVICE).transpose(1, 2)
    cache = torch.randn(1, 2, 20, 64, dtype=torch.float16, device=DEVICE)[:, :, :8]
    prefill_attention(q_hf, cache, cache)
    assert len(calls) == 1
    prefill_tma.ENABLED = False
    prefill_attention(q_hf, cache, cache)
    assert len(calls) == 1  # the switch turns it off
