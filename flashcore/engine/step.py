"""A Llama forward pass over the FlashCore cache, readable top to bottom: `prefill` for prompts, `decode_step`
for one new token per sequence.

Prefill is compute-bound: cuBLAS GEMMs, with FlashCore kernels in between for what is not a GEMM (RMSNorm with
the residual add before it, RoPE/cache append, prefill attention, SiLU·mul), each rounding as the torch ops of
Hugging Face's LlamaDecoderLayer round.
A decode step is bandwidth-bound: with ``projections="gemv"`` each layer is six FlashCore kernels —
  QKV GEMV (RMSNorm in its prologue) -> split-K decode attention (RoPE and the cache append folded in) -> merge
  -> O GEMV (+ residual) -> gate/up GEMV (RMSNorm prologue, SiLU·mul epilogue) -> down GEMV (+ residual)
and ``projections="cublas"`` runs the projections through cuBLAS with torch ops around them, for comparison.
On Hopper and newer GPUs the FlashCore kernels launch with programmatic dependent launch (flashcore._pdl), so each
one's launch overlaps the end of the one before it. Neither function reads anything on the host, so a decode step
can be captured in a CUDA graph.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from flashcore import _validate
from flashcore.decode import DecodeWorkspace, num_splits, rope_decode_attention, sm_count
from flashcore.ops.gemv import gemv
from flashcore.ops.rms_norm import rms_norm
from flashcore.ops.rope_append import rope_append
from flashcore.ops.silu_mul import silu_mul
from flashcore.prefill import prefill_attention

PROJECTIONS = ("gemv", "cublas")


def torch_rms_norm(x, weight, eps):
    """Hugging Face's LlamaRMSNorm in torch ops: fp32 statistics, normalised x rounded to its dtype, times weight."""
    hidden = x.float()
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden.to(x.dtype)


@torch.no_grad()
def prefill(weights, state, tokens, chunk_size=4096):
    """Run prompts tokens [B, S] (left-padded as state.kv_start says) through every layer, chunk by chunk,
    filling the cache from state.write_pos on. Returns the logits of each sequence's last token [B, V]."""
    _validate.check_positive_int("chunk_size", chunk_size)
    logits = None
    for start in range(0, tokens.shape[1], chunk_size):
        chunk = tokens[:, start:start + chunk_size]
        state.reserve(chunk.shape[1])
        logits = _prefill_chunk(weights, state, chunk)
    return logits


def _prefill_chunk(weights, state, tokens):
    shape = weights.shape
    batch, seq_len = tokens.shape
    write_pos, kv_start = state.write_pos[:batch], state.kv_start[:batch]
    kv_end = write_pos + seq_len
    q = torch.empty(batch, seq_len, shape.q_heads, shape.head_dim, dtype=weights.dtype, device=weights.device)
    eps = shape.rms_eps
    h = F.embedding(tokens, weights.embed)  # the residual stream
    delta = None  # the last projection's output, added to h by the next norm (h = h + delta, then the norm)
    for index, layer in enumerate(weights.layers):
        qkv = F.linear(rms_norm(h, layer.attn_norm, eps, add=delta), layer.qkv)
        rope_append(qkv, weights.rope_cos, weights.rope_sin, state.key[index], state.value[index], write_pos,
                    q_out=q, kv_start=kv_start)
        attn = prefill_attention(q.transpose(1, 2), state.key[index, :batch], state.value[index, :batch],
                                 causal=True, kv_lens=kv_end, kv_start=kv_start)
        delta = F.linear(attn.transpose(1, 2).reshape(batch, seq_len, -1), layer.o)
        gate_up = F.linear(rms_norm(h, layer.mlp_norm, eps, add=delta), layer.gate_up)
        delta = F.linear(silu_mul(gate_up), layer.down)
    write_pos.add_(seq_len)
    last = rms_norm(h[:, -1], weights.final_norm, eps, add=delta[:, -1])  # only the last token's logits are kept
    return F.linear(last, weights.lm_head)


@dataclass
class DecodeBuffers:
    """Every tensor one decode step of `batch` sequences writes: allocated once, so that a captured graph
    allocates nothing and its replays find them at the same addresses."""
    tokens: torch.Tensor   # int64 [B]: the input token of each sequence
    h: torch.Tensor        # [B, hidden]: the residual stream
    qkv: torch.Tensor      # [B, (Hq + 2 Hkv) D]
    attn: torch.Tensor     # [B, 1, Hq, D]
    act: torch.Tensor      # [B, intermediate]
    logits: torch.Tensor   # [B, vocab]
    kv_lens: torch.Tensor  # int32 [B]: rows valid once this step's token is in
    workspace: DecodeWorkspace
    splits: int

    @classmethod
    def allocate(cls, weights, batch, max_len):
        s, dtype, device = weights.shape, weights.dtype, weights.device

        def empty(*size):
            return torch.empty(*size, dtype=dtype, device=device)

        # The split count is fixed per graph, chosen for the cache capacity: splits past a sequence's length
        # find no keys and cost one early exit (and a -inf partial that the merge weighs as zero).
        splits = num_splits(batch, s.kv_heads, max_len, sm_count(device))
        return cls(tokens=torch.zeros(batch, dtype=torch.int64, device=device), h=empty(batch, s.hidden),
                   qkv=empty(batch, s.qkv_width),
                   attn=empty(batch, 1, s.q_heads, s.head_dim), act=empty(batch, s.intermediate),
                   logits=empty(batch, s.vocab), kv_lens=torch.zeros(batch, dtype=torch.int32, device=device),
                   workspace=DecodeWorkspace.for_shape(batch, s.q_heads, s.head_dim, splits, device),
                   splits=splits)


@torch.no_grad()
def decode_step(weights, state, buffers, projections="gemv"):
    """One token for each of the B sequences of `buffers`: reads buffers.tokens, appends to the cache at
    state.write_pos, advances it, and leaves the next-token logits in buffers.logits."""
    if projections not in PROJECTIONS:
        raise ValueError(f"projections must be one of {PROJECTIONS}, got {projections!r}")
    fused = projections == "gemv"
    shape, b = weights.shape, buffers
    batch = b.tokens.shape[0]
    eps = shape.rms_eps
    write_pos, kv_start = state.write_pos[:batch], state.kv_start[:batch]
    torch.index_select(weights.embed, 0, b.tokens, out=b.h)
    torch.add(write_pos, 1, out=b.kv_lens)
    for index, layer in enumerate(weights.layers):
        _norm_linear(b.h, layer.attn_norm, layer.qkv, eps, b.qkv, fused)
        rope_decode_attention(b.qkv, weights.rope_cos, weights.rope_sin, state.key[index, :batch],
                              state.value[index, :batch], kv_lens=b.kv_lens, kv_start=kv_start, splits=b.splits,
                              out=b.attn.transpose(1, 2), workspace=b.workspace)
        _linear_add(b.attn.view(batch, -1), layer.o, b.h, fused)
        _norm_linear_silu_mul(b.h, layer.mlp_norm, layer.gate_up, eps, b.act, fused)
        _linear_add(b.act, layer.down, b.h, fused)
    _norm_linear(b.h, weights.final_norm, weights.lm_head, eps, b.logits, fused)
    write_pos.copy_(b.kv_lens)
    return b.logits


def _norm_linear(x, norm_weight, weight, eps, out, fused):
    if fused:
        return gemv(x, weight, norm_weight=norm_weight, eps=eps, out=out)
    return torch.mm(torch_rms_norm(x, norm_weight, eps), weight.t(), out=out)


def _linear_add(x, weight, residual, fused):
    """residual += x · weightᵀ, rounded as `residual + linear(x)`."""
    if fused:
        return gemv(x, weight, residual=residual, out=residual)
    return residual.add_(F.linear(x, weight))


def _norm_linear_silu_mul(x, norm_weight, gate_up, eps, out, fused):
    if fused:
        return gemv(x, gate_up, norm_weight=norm_weight, eps=eps, activation="silu_mul", out=out)
    gate, up = F.linear(torch_rms_norm(x, norm_weight, eps), gate_up).chunk(2, dim=-1)
    return torch.mul(F.silu(gate), up, out=out)
