"""Input checks shared by the public kernel launchers: each failure names the argument at fault."""
import os

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have rank 4 [batch, heads, seq, head_dim], got shape {tuple(t.shape)}")


def check_qkv(query, key, value):
    """Check q [B, Hq, Sq, D] against k, v [B, Hkv, Skv, D]; return (B, Hq, Hkv, Sq, Skv, D)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, t)
    if query.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"query dtype {query.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(f"{name} dtype {t.dtype} does not match query dtype {query.dtype}")
        if t.device != query.device:
            raise ValueError(f"{name} device {t.device} does not match query device {query.device}")
    if query.device.type != "cuda" and not _interpreting():
        raise ValueError(f"query is on {query.device}; FlashCore kernels need a CUDA device "
                         "(or TRITON_INTERPRET=1 for CPU tensors)")
    batch, q_heads, q_len, head_dim = query.shape
    if key.shape != value.shape:
        raise ValueError(f"key shape {tuple(key.shape)} and value shape {tuple(value.shape)} differ")
    k_batch, kv_heads, kv_len, k_dim = key.shape
    if k_batch != batch:
        raise ValueError(f"key batch {k_batch} does not match query batch {batch}")
    if k_dim != head_dim:
        raise ValueError(f"key head_dim {k_dim} does not match query head_dim {head_dim}")
    if head_dim < 16 or head_dim > MAX_HEAD_DIM or head_dim % 8:
        raise ValueError(f"head_dim {head_dim} is not supported: use a multiple of 8 in [16, {MAX_HEAD_DIM}]")
    if kv_heads == 0 or q_heads % kv_heads:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})")
    if kv_len == 0:
        raise ValueError("key has sequence length 0: attention needs at least one key")
    return batch, q_heads, kv_heads, q_len, kv_len, head_dim


def check_lengths(name, lengths, batch, device):
    """A per-sequence int32 device tensor [B] (or None)."""
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype int32, got {type(lengths).__name__}")
    if lengths.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32, got {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one entry per sequence), got {tuple(lengths.shape)}")
    if lengths.device != device:
        raise ValueError(f"{name} device {lengths.device} does not match query device {device}")
    if batch > 1 and lengths.stride(0) != 1:
        raise ValueError(f"{name} must be contiguous (stride 1), got stride {lengths.stride(0)}")


def check_scale(scale, head_dim):
    if scale is None:
        return head_dim ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float, got {type(scale).__name__}")
    if not (scale > 0 and scale != float("inf")):
        raise ValueError(f"scale must be a finite positive number, got {scale}")
    return float(scale)


def check_out(out, shape, dtype, device):
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be a {dtype} tensor of shape {tuple(shape)} on {device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
