"""NaN and inf in the inputs: the kernels propagate them as PyTorch's scaled_dot_product_attention does (float32),
never crash, and never read keys outside the valid range. The behaviour is documented in flashcore/__init__.py."""
import pytest
import torch
import torch.nn.functional as F

from flashcore import decode_attention, prefill_attention
from flashcore.reference import attention_reference

from conftest import DEVICE

# numpy, which runs the interpreter's arithmetic, warns about every NaN and inf it meets: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")

B, HQ, HKV, S, D = 1, 4, 2, 70, 16  # 70 keys: a full 64-key block and a partial one; GQA 2:1
NONFINITE = [float("nan"), float("inf"), float("-inf")]
# Known difference: a non-finite value at a key that the causal mask hides from some rows. SDPA multiplies it by
# a zero probability (0 x NaN = NaN) and so spreads it to every row; the kernel skips key blocks a row cannot
# see, so only the rows whose range ends in the value's block get NaN.
HIDDEN_VALUE = pytest.mark.xfail(strict=True, reason="a causally hidden NaN/inf value reaches only the rows of "
                                                    "its key block, where SDPA spreads it to all rows")


def _inputs(tensor, position, value, q_len=S):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, n, D, generator=gen) for h, n in ((HQ, q_len), (HKV, S), (HKV, S)))
    {"q": q, "k": k, "v": v}[tensor][0, 0, position, 0] = value
    return q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)


def _assert_like_sdpa(out, q, k, v, causal):
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    if q.isnan().any() or k.isnan().any() or v.isnan().any():  # (an inf score of -inf legitimately vanishes)
        assert want.isnan().any(), "the case must put NaN into SDPA's output"
    # NaN exactly where SDPA has NaN, +-inf where it has +-inf, the finite rest equal to within rounding
    torch.testing.assert_close(out, want, equal_nan=True, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("tensor, position", [
    ("q", 3),                                       # one query row
    ("k", 3),                                       # a key most rows see
    ("k", 69),                                      # the last key: only the last row sees it
    ("v", 3),
    pytest.param("v", 69, marks=HIDDEN_VALUE),      # hidden from rows 0..68 by the causal mask
])
def test_causal_prefill_propagates_like_sdpa(tensor, position, value):
    q, k, v = _inputs(tensor, position, value)
    _assert_like_sdpa(prefill_attention(q, k, v, causal=True), q, k, v, causal=True)


@pytest.mark.parametrize("value", NONFINITE)
def test_non_causal_prefill_propagates_like_sdpa(value):
    q, k, v = _inputs("v", 69, value)
    _assert_like_sdpa(prefill_attention(q, k, v, causal=False), q, k, v, causal=False)


@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize("tensor, position", [("q", 0), ("k", 3), ("v", 69)])
def test_decode_propagates_like_sdpa(tensor, position, value):
    q, k, v = _inputs(tensor, position, value, q_len=1)
    _assert_like_sdpa(decode_attention(q, k, v), q, k, v, causal=False)


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_keys_outside_the_valid_range_are_never_read(kind):
    """NaN in the cache before kv_start and from kv_lens on (left padding, an uninitialised cache) does not reach
    the output: those keys are masked on load, unlike SDPA with a boolean mask, which gives NaN there."""
    q, k, v = _inputs("q", 0, 0.0, q_len=5 if kind == "prefill" else 1)
    start = torch.tensor([4], dtype=torch.int32, device=DEVICE)
    lens = torch.tensor([60], dtype=torch.int32, device=DEVICE)
    for t in (k, v):
        t[:, :, :4] = float("nan")
        t[:, :, 60:] = float("nan")
    attention = prefill_attention if kind == "prefill" else decode_attention
    out = attention(q, k, v, kv_lens=lens, kv_start=start)
    want = attention_reference(q, k.nan_to_num(), v.nan_to_num(), kv_lens=lens, kv_start=start)
    assert torch.isfinite(out).all()
    assert (out.double() - want).abs().max() < 1e-5
