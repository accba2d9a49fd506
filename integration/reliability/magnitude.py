"""q and k of large magnitude, near fp16 overflow in q·k: outputs stay finite and within the rule."""
import torch
import torch.nn.functional as F

from flashcore import decode_attention, prefill_attention
from flashcore.reference import attention_reference
from flashcore.testing import ABS_SLACK, within_rule
from integration.reliability.plan import dtype_name

# Largest |q·k| (before the softmax scale) of the large-magnitude inputs: near fp16's 65504, with room for the
# rounding of q and k to fp16, so that PyTorch's own fp16 attention (the rule's yardstick) still has finite scores.
LARGE_QK = 4.0e4


def large_magnitude_inputs(kind, pattern, heads, kv_len, dtype, device, seed=0):
    """q, k, v with max |q·k| about LARGE_QK (before the softmax scale). Patterns:
    "peaked": random q and k scaled up, so the softmax is nearly one-hot on the largest score;
    "shared-offset": q and k share one large direction, so every score is about LARGE_QK and the softmax rests
    on differences of a few units between huge scores (a kernel that forgot to subtract the row max, or kept
    scores in fp16, fails it)."""
    q_heads, kv_heads, head_dim = heads
    q_len = 1 if kind == "decode" else kv_len
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, q_heads, q_len, head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(1, kv_heads, kv_len, head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(1, kv_heads, kv_len, head_dim, generator=gen, dtype=torch.float64)
    if pattern == "peaked":
        group = q_heads // kv_heads
        largest = (q @ k.repeat_interleave(group, dim=1).transpose(-1, -2)).abs().max()
        q, k = q * (LARGE_QK / largest) ** 0.5, k * (LARGE_QK / largest) ** 0.5
    elif pattern == "shared-offset":
        direction = F.normalize(torch.randn(head_dim, generator=gen, dtype=torch.float64), dim=0)
        # scores = LARGE_QK + about 0.3 * 200 * (u·noise) terms: spread of a few logits once scaled by 1/sqrt(D)
        q, k = LARGE_QK ** 0.5 * direction + 0.3 * q, LARGE_QK ** 0.5 * direction + 0.3 * k
    else:
        raise ValueError(f"pattern must be 'peaked' or 'shared-offset', got {pattern!r}")
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def large_magnitude_row(kind, pattern, heads, kv_len, dtype, device, seed=0):
    """One large-magnitude case through FlashCore's public prefill_attention / decode_attention: finite, and
    within the acceptance rule of the float64 reference. float32_err (PyTorch's attention in fp32) is recorded
    beside torch_err: with scores this large, PyTorch's fp16 attention is a loose yardstick."""
    q, k, v = large_magnitude_inputs(kind, pattern, heads, kv_len, dtype, device, seed)
    group = heads[0] // heads[1]
    max_qk = (q.double() @ k.double().repeat_interleave(group, dim=1).transpose(-1, -2)).abs().max().item()
    if kind == "decode":
        out = decode_attention(q, k, v)
    else:
        out = prefill_attention(q, k, v, causal=True)
    ref = attention_reference(q, k, v, causal=True)

    def error(x):
        return (x.double() - ref).abs().max().item()

    err = error(out)
    torch_err = error(attention_reference(q, k, v, causal=True, compute_dtype=dtype))
    float32_err = error(attention_reference(q, k, v, causal=True, compute_dtype=torch.float32))
    finite = bool(torch.isfinite(out).all())
    return {"kind": kind, "pattern": pattern, "dtype": dtype_name(dtype), "B": 1, "Hq": heads[0], "Hkv": heads[1],
            "D": heads[2], "Sq": q.shape[2], "Skv": kv_len, "max_abs_qk": max_qk, "finite": finite, "err": err,
            "torch_err": torch_err, "float32_err": float32_err, "ratio": err / max(torch_err, ABS_SLACK),
            "passed": finite and within_rule(err, torch_err)}


def large_magnitude_rows(plan, device):
    return [large_magnitude_row(kind, pattern, plan.magnitude_heads, length, dtype, device)
            for kind, length in (("prefill", plan.magnitude_prefill_len), ("decode", plan.magnitude_decode_len))
            for pattern in ("peaked", "shared-offset") for dtype in plan.magnitude_dtypes]
