"""Every input rule of FlashCore, in one place: the kernel launchers, KVCache, the seed's API and the Hugging Face
glue call these functions instead of restating a rule, and each failure names the argument at fault.

Rules that are not obvious, and why:

* bfloat16 needs a CUDA GPU. Triton's interpreter (TRITON_INTERPRET=1, what flashcore uses without CUDA)
  computes bf16 ``tl.dot`` wrongly (errors near 1e9), so under the interpreter bf16 is refused rather than
  returned silently wrong. float16 and float32 are exact there.
* The kernels are inference-only: they have no backward, so an input that requires grad is refused while grad
  mode is on (training would otherwise get a result detached from autograd, and wrong gradients with no
  error). Under ``torch.no_grad()`` or ``torch.inference_mode()`` parameters that require grad are fine: that
  is how Hugging Face's ``generate()`` runs.
* Meta tensors have a shape and no data: refused, as nothing can be computed from them.
* Tensors must be on a CUDA device, or anywhere the interpreter can read them when it runs the kernels.
* Lengths given as Python ints (KVCache sizes, its initial lengths) are checked here on the host. Lengths held
  in device tensors (``kv_lens``, ``kv_start``, ``KVCache.lengths``) are never read on the host, so that a call
  can be captured in a CUDA graph: only their dtype, shape and device are checked, and the kernels clamp their
  values to the buffers.
"""
import numbers
import os

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_HEAD_DIM = 16  # the smallest tl.dot operand
MAX_HEAD_DIM = 256  # one head's row of q, k and v stays in registers
HEAD_DIM_MULTIPLE = 8  # 16-byte rows in fp16 and bf16
MAX_LENGTH = 2 ** 31 - 1  # lengths live in int32 device tensors


def _interpreting():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ----------------------------------------------------------------------------------------- Python values

def check_int(name, value, *, minimum=None, maximum=None, optional=False):
    """An int (not a bool, which Python counts as one) in [minimum, maximum]; None too if optional. Returns it."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}, got {type(value).__name__}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None else \
            f">= {minimum}" if minimum is not None else f"<= {maximum}"
        raise ValueError(f"{name} must be an int {bounds}, got {value}")
    return int(value)


def check_positive_int(name, value, *, maximum=None):
    return check_int(name, value, minimum=1, maximum=maximum)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def check_str(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")


def check_dtype(name, dtype):
    """One of the dtypes FlashCore supports (for models and buffers; kernels add check_kernel_dtype's rule)."""
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} {dtype!r} is not supported; use one of {SUPPORTED_DTYPES}")


def check_kernel_dtype(name, dtype):
    """A dtype the kernels compute correctly here: a supported one, and not bf16 under the interpreter."""
    check_dtype(name, dtype)
    if dtype == torch.bfloat16 and _interpreting():
        raise TypeError(f"{name} torch.bfloat16 needs a CUDA GPU: Triton's interpreter (TRITON_INTERPRET=1, used "
                        "without CUDA) computes bf16 dot products wrongly; use float16 or float32 on the CPU")


def check_head_dim(name, head_dim):
    check_int(name, head_dim)
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM or head_dim % HEAD_DIM_MULTIPLE:
        raise ValueError(f"{name} {head_dim} is not supported: use a multiple of {HEAD_DIM_MULTIPLE} in "
                         f"[{MIN_HEAD_DIM}, {MAX_HEAD_DIM}]")


def check_length_values(name, lengths, batch, max_len):
    """Host-side lengths (a list, tuple or integer tensor of `batch` entries), each in [0, max_len]; as a list."""
    if isinstance(lengths, torch.Tensor):
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise TypeError(f"{name} must hold ints, got a {lengths.dtype} tensor")
        if lengths.is_meta:
            raise ValueError(f"{name}: device 'meta' holds shapes without data; pass the lengths themselves")
        lengths = lengths.tolist()
    if not isinstance(lengths, (list, tuple)):
        raise TypeError(f"{name} must be a list, tuple or tensor of ints, got {type(lengths).__name__}")
    if len(lengths) != batch:
        raise ValueError(f"{name} must have one entry per sequence ({batch}), got {len(lengths)}")
    return [check_int(f"{name}[{i}]", n, minimum=0, maximum=max_len) for i, n in enumerate(lengths)]


# ------------------------------------------------------------------------------------------------ devices

def resolve_device(name, device):
    """None means the GPU when there is one, else the CPU; else a str or torch.device that torch accepts."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str, a torch.device or None, got {type(device).__name__}")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{name} {device!r} is not a valid torch device: {err}") from None


def check_kernel_device(name, device):
    """A device the kernels can run on: CUDA, or any real device under the interpreter (never meta)."""
    if device.type == "meta":
        raise ValueError(f"{name}: device 'meta' holds shapes without data; FlashCore kernels need real tensors")
    if device.type != "cuda" and not _interpreting():
        raise ValueError(f"{name}: device {device} is not a CUDA device, which FlashCore kernels need "
                         "(or TRITON_INTERPRET=1 for CPU tensors)")


# ------------------------------------------------------------------------------------------------ tensors

def check_inference_only(name, t):
    if t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{name} requires grad, but FlashCore kernels are inference-only (no backward): "
                           "call them under torch.no_grad() or torch.inference_mode(), or pass detached tensors")


def check_tensor(name, t):
    """A rank-4 [batch, heads, seq, head_dim] tensor on a device the kernels can run on, not requiring grad."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must have rank 4 [batch, heads, seq, head_dim], got shape {tuple(t.shape)}")
    check_kernel_device(name, t.device)
    check_inference_only(name, t)


def check_qkv(query, key, value):
    """Check q [B, Hq, Sq, D] against k, v [B, Hkv, Skv, D]; return (B, Hq, Hkv, Sq, Skv, D)."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(name, t)
    check_kernel_dtype("query dtype", query.dtype)
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(f"{name} dtype {t.dtype} does not match query dtype {query.dtype}")
        if t.device != query.device:
            raise ValueError(f"{name} device {t.device} does not match query device {query.device}")
    batch, q_heads, q_len, head_dim = query.shape
    if key.shape != value.shape:
        raise ValueError(f"key shape {tuple(key.shape)} and value shape {tuple(value.shape)} differ")
    k_batch, kv_heads, kv_len, k_dim = key.shape
    if k_batch != batch:
        raise ValueError(f"key batch {k_batch} does not match query batch {batch}")
    if k_dim != head_dim:
        raise ValueError(f"key head_dim {k_dim} does not match query head_dim {head_dim}")
    check_head_dim("head_dim", head_dim)
    if q_heads == 0 or kv_heads == 0 or q_heads % kv_heads:
        raise ValueError(f"query heads ({q_heads}) must be a positive multiple of key/value heads ({kv_heads})")
    if kv_len == 0:
        raise ValueError("key has sequence length 0: attention needs at least one key")
    return batch, q_heads, kv_heads, q_len, kv_len, head_dim


# Signatures (shapes, dtypes, devices, layouts of the length vectors) that passed check_attention_call: a
# call that matches one skips the checks, which would otherwise cost more host time than a decode kernel runs.
# Prefill adds one per prompt length, so the set is emptied when it grows past MAX_VALIDATED (checks run again).
_VALIDATED = set()
MAX_VALIDATED = 4096


def _attention_signature(query, key, value, kv_lens, kv_start):
    """What check_qkv and check_lengths depend on, or None (check every call) when an argument is not a tensor
    (the checks will name it) or the query is off CUDA (the interpreter's host time is no concern, and whether
    a CPU tensor is allowed depends on TRITON_INTERPRET)."""
    if not all(isinstance(t, torch.Tensor) for t in (query, key, value)) \
            or not all(t is None or isinstance(t, torch.Tensor) for t in (kv_lens, kv_start)) \
            or query.device.type != "cuda":
        return None
    lengths = tuple(None if t is None else (t.shape, t.dtype, t.device, t.stride()) for t in (kv_lens, kv_start))
    return (query.shape, key.shape, value.shape, query.dtype, key.dtype, value.dtype, query.device, key.device,
            value.device, lengths)


def check_attention_call(query, key, value, kv_lens, kv_start):
    """An attention launcher's checks of q, k, v and the length vectors: shapes, dtypes and devices once per
    signature; the inference-only rule, which depends on grad mode, on every call.
    Returns (B, Hq, Hkv, Sq, Skv, D)."""
    signature = _attention_signature(query, key, value, kv_lens, kv_start)
    if signature is None or signature not in _VALIDATED:
        batch = check_qkv(query, key, value)[0]
        check_lengths("kv_lens", kv_lens, batch, query.device)
        check_lengths("kv_start", kv_start, batch, query.device)
        if len(_VALIDATED) >= MAX_VALIDATED:
            _VALIDATED.clear()
        _VALIDATED.add(signature)
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_inference_only(name, t)
    return query.shape[0], query.shape[1], key.shape[1], query.shape[2], key.shape[2], query.shape[3]


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


def check_eps(eps):
    """A norm's epsilon: a finite number >= 0 (a bool is not one). Returns it as a float."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return float(eps)


def check_out(out, shape, dtype, device):
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be a {dtype} tensor of shape {tuple(shape)} on {device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    check_inference_only("out", out)


# ------------------------------------------------------------------ matrices and vectors (flashcore.ops)

def check_matrix(name, t, shape=None, contiguous_rows=True):
    """A 2D tensor the kernels can compute on (dtype, device, inference only); with contiguous_rows, stride 1
    along the last dimension."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have rank 2, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    check_kernel_dtype(f"{name} dtype", t.dtype)
    check_kernel_device(name, t.device)
    check_inference_only(name, t)
    if contiguous_rows and t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name} rows must be contiguous (stride 1 along the last dimension), got strides "
                         f"{t.stride()}")


def check_rows(name, t, ref_name, ref, shape=None):
    """t [..., n] (rank 2 or more; of `shape` where given), with ref's dtype and device, as a matrix of contiguous
    rows sharing its memory: a 2D tensor as it is, more dimensions flattened where a view can do it. Returns that
    matrix."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    rows = t
    if t.dim() != 2:
        try:
            rows = t.view(-1, t.shape[-1])
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(t.shape)} and strides {t.stride()} cannot be viewed as rows "
                             "without a copy") from None
    check_matrix(name, rows)
    check_same(name, t, ref_name, ref)
    return rows


def check_vector(name, t, length):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(t.shape)}")
    if length > 1 and t.stride(0) != 1:
        raise ValueError(f"{name} must be contiguous, got stride {t.stride(0)}")


def check_same(name, t, ref_name, ref):
    """t has ref's dtype and device."""
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} dtype {t.dtype} does not match {ref_name} dtype {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} device {t.device} does not match {ref_name} device {ref.device}")


def check_contiguous_last_dim(name, t):
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous along its last dimension, got strides {t.stride()}")
