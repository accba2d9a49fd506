"""Prefill and decode kernels against the float64 reference, by the FlashAttention acceptance rule."""
import pytest
import torch

from flashcore import decode_attention, num_splits, prefill_attention
from flashcore.reference import attention_reference
from flashcore.testing import (ABS_SLACK, AttentionCase, cpu_cases, gpu_cases, run_bad_input_checks, run_case,
                               within_rule)

from conftest import DEVICE, ON_GPU


def _case_id(case):
    flags = [f for f, on in (("nc", not case.causal), ("strided", case.strided), ("ragged", case.ragged)) if on]
    split = [f"splits{case.splits}"] if case.splits else []
    return "-".join([f"b{case.batch}", f"h{case.q_heads}x{case.kv_heads}", f"d{case.head_dim}",
                     f"{case.q_len}of{case.kv_len}", case.dtype] + flags + split)


@pytest.mark.parametrize("case", cpu_cases(), ids=_case_id)
def test_case_matches_reference(case):
    row = run_case(case, DEVICE)
    assert row["finite"], "NaN/inf or an unwritten (poisoned) element in the output"
    assert row["passed"], f"err {row['err']:.3g} > 2 x torch err {row['torch_err']:.3g} + {ABS_SLACK:g}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", gpu_cases() if ON_GPU else [], ids=_case_id)
def test_gpu_matrix(case):
    row = run_case(case, DEVICE)
    assert row["passed"], row


@pytest.mark.skipif(ON_GPU, reason="documents the interpreter limitation only")
def test_bf16_is_gpu_only():
    pytest.skip("bf16 tl.dot returns wrong values in Triton 3.6's interpreter; bf16 cases run on the GPU")


def test_rule_catches_a_wrong_kernel():
    """The acceptance rule must fail an output that is slightly off: guards against a check that cannot fail."""
    case = AttentionCase(1, 8, 2, 64, 17, 17)
    q, k, v = (torch.randn(1, h, 17, 64, dtype=torch.float16, device=DEVICE) for h in (8, 2, 2))
    out = prefill_attention(q, k, v)
    ref = attention_reference(q, k, v)
    low = attention_reference(q, k, v, compute_dtype=torch.float16)
    torch_err = (low.double() - ref).abs().max().item()
    assert within_rule((out.double() - ref).abs().max().item(), torch_err)
    wrong = prefill_attention(q, k, v, causal=False)  # a mask bug
    assert not within_rule((wrong.double() - ref).abs().max().item(), torch_err)
    assert case.kind == "prefill"


def test_unwritten_output_is_caught():
    """A poisoned element the kernel does not write stays NaN: run_case reports it as not finite."""
    out = torch.full((1, 8, 1, 64), float("nan"), dtype=torch.float16, device=DEVICE)
    assert not torch.isfinite(out).all()
    q = torch.randn(1, 8, 1, 64, dtype=torch.float16, device=DEVICE)
    k = torch.randn(1, 2, 5, 64, dtype=torch.float16, device=DEVICE)
    decode_attention(q, k, k, out=out)
    assert torch.isfinite(out).all()


def test_lse_output():
    q = torch.randn(2, 4, 9, 64, dtype=torch.float32, device=DEVICE)
    k = torch.randn(2, 2, 20, 64, dtype=torch.float32, device=DEVICE)
    v = torch.randn_like(k)
    _, lse = prefill_attention(q, k, v, causal=True, return_lse=True)
    kk = k.double().repeat_interleave(2, 1)
    scores = q.double() @ kk.transpose(-1, -2) / 8.0
    mask = torch.arange(20, device=DEVICE)[None, :] <= (11 + torch.arange(9, device=DEVICE))[:, None]
    want = scores.masked_fill(~mask, float("-inf")).logsumexp(-1)
    assert torch.allclose(lse.double(), want, atol=1e-4)


def test_scale_argument():
    q = torch.randn(1, 4, 8, 64, dtype=torch.float32, device=DEVICE)
    k = torch.randn(1, 4, 8, 64, dtype=torch.float32, device=DEVICE)
    out = prefill_attention(q, k, k, scale=0.3)
    ref = attention_reference(q, k, k, scale=0.3)
    assert (out.double() - ref).abs().max() < 1e-4
    assert (out.double() - attention_reference(q, k, k)).abs().max() > 1e-2


def test_fully_padded_rows_are_zero():
    """Left-padding queries that see no key give zeros, not NaN (as a padded batch needs)."""
    q = torch.randn(1, 2, 6, 64, dtype=torch.float16, device=DEVICE)
    k = torch.randn(1, 1, 6, 64, dtype=torch.float16, device=DEVICE)
    start = torch.tensor([3], dtype=torch.int32, device=DEVICE)
    out = prefill_attention(q, k, k, kv_start=start)
    assert torch.isfinite(out).all()
    assert out[:, :, :3].abs().max() == 0


@pytest.mark.parametrize("kv_len", [1, 7, 129, 1000])
def test_forced_single_split_equals_heuristic(kv_len):
    q = torch.randn(1, 8, 1, 64, dtype=torch.float32, device=DEVICE)
    k = torch.randn(1, 2, kv_len, 64, dtype=torch.float32, device=DEVICE)
    v = torch.randn_like(k)
    one = decode_attention(q, k, v, splits=1)
    many = decode_attention(q, k, v, splits=num_splits(1, 2, kv_len, 132))
    assert torch.allclose(one, many, atol=1e-5)


@pytest.mark.parametrize("splits", [1, 3])
def test_decode_writes_only_its_output_view(splits):
    """One split writes the output itself (no merge kernel), through the caller's strides: a view into a larger
    buffer gets the same values as the merge path's, and nothing around it changes."""
    q = torch.randn(2, 8, 1, 64, dtype=torch.float16, device=DEVICE)
    k = torch.randn(2, 2, 150, 64, dtype=torch.float16, device=DEVICE)
    v = torch.randn_like(k)
    lens = torch.tensor([150, 17], dtype=torch.int32, device=DEVICE)
    buffer = torch.full((2, 10, 3, 80), 7.0, dtype=torch.float16, device=DEVICE)
    view = buffer[:, 1:9, 1:2, 8:72]  # [2, 8, 1, 64], no stride of 1 but the last
    decode_attention(q, k, v, kv_lens=lens, splits=splits, out=view)
    expected = decode_attention(q, k, v, kv_lens=lens, splits=4)
    assert torch.allclose(view, expected, atol=2e-3, rtol=0)
    untouched = torch.ones_like(buffer, dtype=torch.bool)
    untouched[:, 1:9, 1:2, 8:72] = False
    assert (buffer[untouched] == 7.0).all()


def test_num_splits_heuristic():
    # the Llama 3.1 8B decode shape on an H100 or H200 (132 SMs): two waves
    assert num_splits(1, 8, 4096, 132) == 33
    # short cache: never more splits than key blocks
    assert num_splits(1, 8, 100, 132) == 2
    assert num_splits(1, 8, 1, 132) == 1
    # batched: whole waves only (8 x 8 x 4 = 256 programs, not 5 splits' 2.4 waves)
    assert num_splits(8, 8, 4096, 132) == 4
    assert num_splits(2, 8, 4096, 132) == 16
    # a large batch already fills the GPU: one split
    assert num_splits(64, 8, 4096, 132) == 1
    # capped for very long caches on big GPUs
    assert num_splits(1, 1, 131072, 132) == 64
    # pure: same answer every time
    assert num_splits(3, 8, 2048, 132) == num_splits(3, 8, 2048, 132)


def test_bad_inputs_raise_clear_errors():
    rows = run_bad_input_checks(DEVICE)
    unclear = [r for r in rows if not r["clear"]]
    assert not unclear, unclear
