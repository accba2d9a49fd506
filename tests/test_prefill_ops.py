"""The prefill's fused RMSNorm (with the residual add) and SiLU·mul against the torch ops they replace: Hugging
Face's LlamaRMSNorm and ``act_fn(gate) * up``."""
import pytest
import torch
import torch.nn.functional as F

from conftest import ON_GPU
from flashcore.engine import torch_rms_norm
from flashcore.ops.rms_norm import rms_norm
from flashcore.ops.silu_mul import silu_mul

DTYPES = [torch.float16, torch.float32] + ([torch.bfloat16] if ON_GPU else [])
# How far from the torch ops the kernels may round: the order of the fp32 sum of squares (rms_norm) and the exp's
# last bit (silu_mul, in the interpreter) move an fp32 result by a few units in the last place. In 16 bits that
# flips an intermediate rounding (x·rstd, silu) by one unit now and then, which the product after it carries:
# two units of the result's relative precision, in a few elements.
ULPS = {torch.float16: 2 ** -9, torch.bfloat16: 2 ** -6, torch.float32: 4 * 2 ** -23}


def _randn(*shape, dtype, device, scale=1.0):
    return (torch.randn(*shape) * scale).to(device=device, dtype=dtype)


def _assert_rounded_alike(got, expected, dtype):
    torch.testing.assert_close(got, expected, rtol=ULPS[dtype], atol=ULPS[dtype] * 1e-3)
    if dtype != torch.float32:
        assert (got == expected).float().mean().item() > 0.95, "more than 5% of elements differ in their last bit"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [64, 100])  # a power of two, and one the block pads
def test_rms_norm_matches_llama_rms_norm_and_adds_in_place(dtype, hidden, device):
    h = _randn(2, 9, hidden, dtype=dtype, device=device)
    delta = _randn(2, 9, hidden, dtype=dtype, device=device)
    weight = _randn(hidden, dtype=dtype, device=device)
    expected_h = h + delta
    out = torch.full_like(h, float("nan"))
    assert rms_norm(h.clone(), weight, 1e-5, out=out) is out
    _assert_rounded_alike(out, torch_rms_norm(h, weight, 1e-5), dtype)
    got = rms_norm(h, weight, 1e-5, add=delta)
    assert torch.equal(h, expected_h), "the residual add is not x + add, in place"
    _assert_rounded_alike(got, torch_rms_norm(expected_h, weight, 1e-5), dtype)


def test_rms_norm_of_a_strided_row_view_touches_only_those_rows(device):
    """The prefill's last step: h[:, -1] += delta[:, -1], normalised; every other row of h stays."""
    dtype, hidden = torch.float16, 64
    h = _randn(3, 5, hidden, dtype=dtype, device=device)
    delta = _randn(3, 5, hidden, dtype=dtype, device=device)
    weight = _randn(hidden, dtype=dtype, device=device)
    before = h.clone()
    got = rms_norm(h[:, -1], weight, 1e-5, add=delta[:, -1])
    assert torch.equal(h[:, :-1], before[:, :-1]), "rows outside the view were written"
    assert torch.equal(h[:, -1], before[:, -1] + delta[:, -1])
    _assert_rounded_alike(got, torch_rms_norm(h[:, -1], weight, 1e-5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [96, 1500])  # one block, and a padded second block of BLOCK columns
def test_silu_mul_matches_act_fn_times_up(dtype, width, device):
    gate_up = _randn(2, 3, 2 * width, dtype=dtype, device=device, scale=4.0)
    gate, up = gate_up.chunk(2, dim=-1)
    out = torch.full((2, 3, width), float("nan"), dtype=dtype, device=device)
    assert silu_mul(gate_up, out=out) is out
    _assert_rounded_alike(out, F.silu(gate) * up, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_on_cuda_is_torch_bit_for_bit(dtype, device):
    """Compiled, silu takes torch's expf and IEEE division from libdevice (flashcore/ops/_precise.py)."""
    gate_up = _randn(64, 2 * 1024, dtype=dtype, device=device, scale=4.0)
    gate, up = gate_up.chunk(2, dim=-1)
    expected = F.silu(gate) * up
    got = silu_mul(gate_up)
    differs = (got != expected).nonzero()
    assert len(differs) == 0, f"{len(differs)} elements differ from torch's, first at {differs[0].tolist()}"
