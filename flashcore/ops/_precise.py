"""Arithmetic rounded as torch's CUDA kernels round it, for kernels whose results should equal torch's bit for bit.

Compiled, Triton contracts a product and the add after it into one FMA (rounded once where torch rounds twice),
and its exp and fp32 division are fast approximations (ex2.approx, div.full: a few units in the last place off).
torch's kernels (built without fast math) use expf and IEEE division. libdevice has each of those: mul_rn is never
contracted, exp is expf, div_rn is IEEE division. The interpreter has no libdevice, and numpy never contracts and
divides exactly.
"""
import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


@triton.jit
def mul_rn(a, b):
    """a * b in fp32, rounded on its own (never fused with an add that follows)."""
    if INTERPRETED:
        return a * b
    else:
        return libdevice.mul_rn(a, b)


@triton.jit
def silu(x):
    """x · sigmoid(x) of an fp32 tensor, as torch's CUDA silu computes it: x / (1 + expf(-x))."""
    if INTERPRETED:
        return x / (1.0 + tl.exp(-x))
    else:
        return libdevice.div_rn(x, 1.0 + libdevice.exp(-x))
