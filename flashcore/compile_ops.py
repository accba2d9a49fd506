"""The attention kernels as PyTorch custom ops, for code that torch.compile traces (Hugging Face's compiled
static-cache generate()).

Traced as plain Python, a kernel launcher leaves guards on everything it reads on the host (tensor sizes, the
SM-count cache, the split count), and any change of a cache size recompiles the model. As custom ops the
launchers are opaque to the compiler: it sees only the output's shape, computed by the fake implementations
below, so the launcher's Python never becomes part of a guard.

Decode's split partials get a workspace of their own on every call rather than the launcher's shared default.
Compiled with CUDA graphs (mode="reduce-overhead"), every allocation made while a graph is recorded comes from
the graph's private pool and must be dead or an output when recording ends; the shared default lives on, and
torch refuses the graph ("tensor(s) in the cudagraph pool not tracked as outputs").
"""
from typing import Optional

import torch

from flashcore.decode import DecodeWorkspace, decode_attention
from flashcore.prefill import prefill_attention


@torch.library.custom_op("flashcore::decode_attention", mutates_args=())
def decode_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_lens: Optional[torch.Tensor],
                        kv_start: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """decode_attention, returning [B, 1, Hq, D] (the layout transformers wants back)."""
    batch, q_heads, _, head_dim = query.shape
    out = torch.empty(batch, 1, q_heads, head_dim, dtype=query.dtype, device=query.device)
    workspace = DecodeWorkspace.for_shape(batch, q_heads, head_dim, device=query.device)  # freed on return
    decode_attention(query, key, value, kv_lens=kv_lens, kv_start=kv_start, scale=scale, out=out.transpose(1, 2),
                     workspace=workspace)
    return out


@decode_attention_op.register_fake
def _decode_attention_shape(query, key, value, kv_lens, kv_start, scale):
    batch, q_heads, _, head_dim = query.shape
    return query.new_empty(batch, 1, q_heads, head_dim)


@torch.library.custom_op("flashcore::prefill_attention", mutates_args=())
def prefill_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         kv_lens: Optional[torch.Tensor], kv_start: Optional[torch.Tensor], scale: float,
                         causal: bool) -> torch.Tensor:
    """prefill_attention, returning [B, Sq, Hq, D] (the layout transformers wants back)."""
    batch, q_heads, q_len, head_dim = query.shape
    out = torch.empty(batch, q_len, q_heads, head_dim, dtype=query.dtype, device=query.device)
    prefill_attention(query, key, value, causal=causal, kv_lens=kv_lens, kv_start=kv_start, scale=scale,
                      out=out.transpose(1, 2))
    return out


@prefill_attention_op.register_fake
def _prefill_attention_shape(query, key, value, kv_lens, kv_start, scale, causal):
    batch, q_heads, q_len, head_dim = query.shape
    return query.new_empty(batch, q_len, q_heads, head_dim)
