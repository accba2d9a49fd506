"""RMSNorm over the rows of x, with the residual add before it fused in: one pass where torch takes seven.

At prefill a Llama layer normalises its residual stream twice, and Hugging Face's LlamaRMSNorm is six torch ops
over [tokens, hidden] (float, pow, mean, rsqrt, mul, to, times weight), after the residual add, a seventh. At 8192
tokens of the 8B shape that is about 1.2 GB of traffic a norm, where reading h and the projection's output and
writing h and the normalised rows moves 0.26 GB.

Rounded as those ops round: the sum in x's dtype, fp32 statistics, x·rstd rounded to x's dtype, times the weight,
rounded again. The order of the fp32 sum of squares (and rsqrt's last bit) may differ from torch's: on an H200,
99.998% of fp16 outputs are torch's bit for bit at 8192x4096, the rest one unit apart (probe run33).
"""
import torch
import triton
import triton.language as tl

from flashcore import _pdl, _validate
from flashcore._pdl import wait_for_previous_kernel

MAX_HIDDEN = 65536  # a whole row stays in registers


@triton.jit
def _rms_norm_kernel(X, Add, Weight, Out, stride_xm, stride_am, stride_om, hidden, eps,
                     BLOCK_D: tl.constexpr, HAS_ADD: tl.constexpr, USE_PDL: tl.constexpr):
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): nothing before it
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < hidden
    x = tl.load(X + row * stride_xm + offs, mask=mask, other=0.0)
    if HAS_ADD:
        x = (x.to(tl.float32) + tl.load(Add + row * stride_am + offs, mask=mask, other=0.0).to(tl.float32))
        x = x.to(X.dtype.element_ty)
        tl.store(X + row * stride_xm + offs, x, mask=mask)
    x32 = x.to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(x32 * x32, 0) / hidden + eps)
    weight = tl.load(Weight + offs, mask=mask, other=0.0).to(tl.float32)
    y = (x32 * rstd).to(X.dtype.element_ty).to(tl.float32) * weight
    tl.store(Out + row * stride_om + offs, y.to(Out.dtype.element_ty), mask=mask)


def rms_norm(x, weight, eps, *, add=None, out=None):
    """RMSNorm of x [..., hidden] with weight [hidden], as Hugging Face's LlamaRMSNorm computes it.

    add: a tensor like x; x += add first, in place (rounded as ``x + add``), and the norm is taken of the sum:
    a decoder layer's residual stream h = h + delta followed by its norm. out: optional output like x (new
    otherwise). x, add and out need stride 1 along hidden; leading dimensions may be any view that flattens.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [..., hidden] (rank 2 or more), got {tuple(x.shape)}")
    hidden = x.shape[-1]
    _validate.check_positive_int("hidden (x's last dimension)", hidden, maximum=MAX_HIDDEN)
    eps = _validate.check_eps(eps)
    _validate.check_vector("weight", weight, hidden)
    _validate.check_same("weight", weight, "x", x)
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rows = {name: _validate.check_rows(name, t, "x", x, shape=x.shape)
            for name, t in (("x", x), ("add", add), ("out", out)) if t is not None}
    if rows["x"].shape[0] == 0:
        return out
    block_d = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(rows["x"].shape[0],)](
        rows["x"], rows.get("add"), weight, rows["out"],
        rows["x"].stride(0), rows["add"].stride(0) if add is not None else 0, rows["out"].stride(0),
        hidden, eps, BLOCK_D=block_d, HAS_ADD=add is not None, num_warps=min(16, max(1, block_d // 512)),
        **_pdl.launch_arguments(x.device),
    )
    return out
