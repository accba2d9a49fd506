"""FlashCore: Triton attention kernels for Llama inference.

Causal GQA prefill (FlashAttention-2 style), split-K GQA decode over a KV cache, a static KV cache,
and the seed's ``attention_with_kv_cache`` API. This package knows torch and triton, never transformers.

Inputs are checked by flashcore._validate (its docstring lists the rules): a misuse raises a ValueError,
TypeError or RuntimeError naming the argument. The kernels are inference-only, and bf16 needs a CUDA GPU
(Triton's interpreter computes it wrongly).

NaN and inf in the inputs propagate as in PyTorch's scaled_dot_product_attention (its CPU kernel, float32), and
never raise:
* NaN in a query row gives NaN in that row's output; NaN in a key gives NaN in every row that sees that key;
  NaN in a value gives NaN in those rows, in that value's dimensions. An inf score gives NaN (inf - inf), a
  -inf score a zero weight, an inf value an inf (or NaN) output, all as SDPA does.
* Keys outside a sequence's valid range (before kv_start, from kv_lens on) are never read: NaN or garbage there,
  say in an uninitialised cache, does not reach the output (SDPA with a boolean mask gives NaN there).
* One difference: a non-finite value at a key the causal mask hides from some rows reaches those of them whose
  block of query rows visits that key's block (it meets a zero probability inside the block's product), where
  SDPA spreads it to every row. Rows that can see the key agree.
tests/test_nonfinite.py compares each case with SDPA in float32.
"""
import os as _os
import sys as _sys

# Triton reads TRITON_INTERPRET when a kernel is decorated, so it must be set before any kernel module loads.
# On a machine without CUDA the kernels then run through Triton's interpreter (slow, but exact enough for tests).
if "TRITON_INTERPRET" not in _os.environ:
    import torch as _torch

    if not _torch.cuda.is_available():
        if "triton.language" in _sys.modules:
            # triton's own library functions were already built for compilation; interpreted kernels cannot call them
            raise ImportError("triton was imported before flashcore on a machine without CUDA: import flashcore "
                              "first (before transformers, which imports triton) or set TRITON_INTERPRET=1")
        _os.environ["TRITON_INTERPRET"] = "1"
        print("flashcore: CUDA is not available; running kernels through the Triton interpreter "
              "(TRITON_INTERPRET=1)", file=_sys.stderr)

from flashcore.api import attention_with_kv_cache  # noqa: E402
from flashcore.cache import KVCache  # noqa: E402
from flashcore.decode import DecodeWorkspace, decode_attention, num_splits, rope_decode_attention  # noqa: E402
from flashcore.ops.gemv import gemv  # noqa: E402
from flashcore.ops.rms_norm import rms_norm  # noqa: E402
from flashcore.ops.rope_append import rope_append, rope_tables  # noqa: E402
from flashcore.ops.silu_mul import silu_mul  # noqa: E402
from flashcore.prefill import prefill_attention  # noqa: E402
from flashcore.reference import attention_reference  # noqa: E402

INTERPRETED = _os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

__all__ = [
    "DecodeWorkspace",
    "INTERPRETED",
    "KVCache",
    "attention_reference",
    "attention_with_kv_cache",
    "decode_attention",
    "gemv",
    "num_splits",
    "prefill_attention",
    "rms_norm",
    "rope_append",
    "rope_decode_attention",
    "rope_tables",
    "silu_mul",
]
