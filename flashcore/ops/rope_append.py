"""RoPE fused into the KV-cache append: one small kernel instead of Hugging Face's ~10 per layer (slices, cat,
rotate_half, four multiplies, two adds, two cache copies).

Input is the merged QKV projection of S new tokens per sequence, [B, S, (Hq + 2·Hkv)·D]. Token s of sequence b
goes to cache row ``write_pos[b] + s``; its rotary position is that row minus ``kv_start[b]`` (left padding),
which is the position Hugging Face gives it (``attention_mask.cumsum(-1) - 1``). The rotated queries go to
``q_out`` [B, S, Hq, D]; rotated keys and the values go into the cache in place.

Rounding follows ``q * cos + rotate_half(q) * sin`` in the model's dtype: each product is rounded, then the
sum, with cos/sin tables already in that dtype (see ``rope_tables``).
"""
import torch
import triton
import triton.language as tl

from flashcore import _validate
from flashcore.ops._precise import mul_rn


def rope_tables(inv_freq, attention_scaling, max_positions, dtype):
    """cos, sin [max_positions, D/2] in `dtype`, computed with the operations Hugging Face's rotary embedding
    uses (fp32 angles inv_freq @ positions as a batched matmul, cos/sin in fp32, times attention_scaling, then
    cast), so that the tables equal HF's bit for bit on whatever device computes them."""
    positions = torch.arange(max_positions, device=inv_freq.device, dtype=torch.float32)
    angles = inv_freq.float()[None, :, None] @ positions[None, None, :]  # [1, D/2, P]
    angles = angles[0].t().contiguous()
    return (angles.cos() * attention_scaling).to(dtype), (angles.sin() * attention_scaling).to(dtype)


def check_tables(cos, sin, head_dim):
    """cos and sin are rope_tables' pair for heads of head_dim: two tensors of shape [positions, head_dim / 2]."""
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor (from rope_tables), got {type(t).__name__}")
    if cos.shape != sin.shape or cos.dim() != 2 or cos.shape[1] != head_dim // 2:
        raise ValueError(f"cos and sin must both be [positions, {head_dim // 2}], got {tuple(cos.shape)} and "
                         f"{tuple(sin.shape)}")


@triton.jit
def rotate(x, partner, cos, sin, first_half):
    """x * cos + rotate_half(x) * sin, elementwise, where partner is the element half a head away (rotate_half(x)
    is -partner in the first half of the head and +partner in the second); cos, sin in fp32. Each product is
    rounded to x's dtype, then the sum, as torch rounds them: in every dtype, fp32 included, no product is
    contracted with the sum into one FMA."""
    ty = x.dtype
    a = mul_rn(x.to(tl.float32), cos).to(ty).to(tl.float32)
    b = mul_rn(partner.to(tl.float32), sin).to(ty).to(tl.float32)
    return tl.where(first_half, a - b, a + b).to(ty)


# One program a token, all its heads in two tiles (queries; keys with their values): the position's cos/sin are
# loaded once, and a 4096-token prefill chunk of the 8B shape is 4096 programs. (One program a (token, head), 40x as
# many programs of one warp each, ran at 199 us a chunk, an eighth of the copy rate: probe run10's profile.)
@triton.jit(do_not_specialize=["seq_len", "max_len", "max_positions"])
def _rope_append_kernel(
    QKV, Cos, Sin, KCache, VCache, QOut, WritePos, KvStart,
    stride_xb, stride_xs,
    stride_cb, stride_ch, stride_cs,
    stride_vb, stride_vh, stride_vs,
    stride_qb, stride_qs, stride_qh,
    stride_table,
    seq_len, max_len, max_positions,
    Q_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, Q_HEADS_PADDED: tl.constexpr, KV_HEADS_PADDED: tl.constexpr,
    HALF_DIM: tl.constexpr, HALF_PADDED: tl.constexpr, HAS_KV_START: tl.constexpr,
):
    s = tl.program_id(0)
    off_b = tl.program_id(1)
    offs = tl.arange(0, HALF_PADDED)[None, :]
    mask = offs < HALF_DIM
    row = tl.load(WritePos + off_b) + s
    position = row
    if HAS_KV_START:
        position = row - tl.load(KvStart + off_b)
    position = tl.minimum(tl.maximum(position, 0), max_positions - 1)  # left padding is never attended
    cos = tl.load(Cos + position.to(tl.int64) * stride_table + offs, mask=mask, other=0.0).to(tl.float32)
    sin = tl.load(Sin + position.to(tl.int64) * stride_table + offs, mask=mask, other=0.0).to(tl.float32)
    token = QKV + off_b.to(tl.int64) * stride_xb + s.to(tl.int64) * stride_xs  # [q heads | k heads | v heads]

    # queries: rotated into q_out
    q_heads = tl.arange(0, Q_HEADS_PADDED)[:, None]
    q_mask = (q_heads < Q_HEADS) & mask
    q_src = token + q_heads * 2 * HALF_DIM + offs
    x1 = tl.load(q_src, mask=q_mask, other=0.0)
    x2 = tl.load(q_src + HALF_DIM, mask=q_mask, other=0.0)
    q_row = QOut + off_b.to(tl.int64) * stride_qb + s.to(tl.int64) * stride_qs + q_heads * stride_qh + offs
    tl.store(q_row, rotate(x1, x2, cos, sin, True), mask=q_mask)
    tl.store(q_row + HALF_DIM, rotate(x2, x1, cos, sin, False), mask=q_mask)

    # keys rotated and values as they are, into the cache row. A device-side guard as well: whatever write_pos
    # holds, nothing is written outside the cache.
    kv_heads = tl.arange(0, KV_HEADS_PADDED)[:, None]
    kv_mask = (kv_heads < KV_HEADS) & mask
    in_cache = kv_mask & (row < max_len) & (row >= 0)
    k_src = token + (Q_HEADS + kv_heads) * 2 * HALF_DIM + offs
    x1 = tl.load(k_src, mask=kv_mask, other=0.0)
    x2 = tl.load(k_src + HALF_DIM, mask=kv_mask, other=0.0)
    k_row = KCache + off_b.to(tl.int64) * stride_cb + kv_heads.to(tl.int64) * stride_ch \
        + row.to(tl.int64) * stride_cs + offs
    tl.store(k_row, rotate(x1, x2, cos, sin, True), mask=in_cache)
    tl.store(k_row + HALF_DIM, rotate(x2, x1, cos, sin, False), mask=in_cache)
    v_src = k_src + KV_HEADS * 2 * HALF_DIM
    v_row = VCache + off_b.to(tl.int64) * stride_vb + kv_heads.to(tl.int64) * stride_vh \
        + row.to(tl.int64) * stride_vs + offs
    tl.store(v_row, tl.load(v_src, mask=kv_mask), mask=in_cache)
    tl.store(v_row + HALF_DIM, tl.load(v_src + HALF_DIM, mask=kv_mask), mask=in_cache)


def rope_append(qkv, cos, sin, key_cache, value_cache, write_pos, *, q_out, kv_start=None):
    """Rotate and scatter S new tokens: qkv [B, S, (Hq + 2·Hkv)·D] -> q_out [B, S, Hq, D] (rotated queries),
    key_cache/value_cache [B', Hkv, L, D] (B' >= B) rows write_pos[b] ... write_pos[b] + S - 1.

    cos, sin: [P, D/2] tables from rope_tables. write_pos, kv_start: int32 [B] on the device (never read on the
    host: the call can be captured in a CUDA graph). Capacity is the caller's to check; rows past L are not
    written. Does not advance write_pos.
    """
    _validate.check_tensor("key_cache", key_cache)
    _validate.check_tensor("value_cache", value_cache)
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 3:
        raise ValueError(f"qkv must be a tensor of rank 3 [B, S, (Hq + 2*Hkv)*D], got "
                         f"{getattr(qkv, 'shape', type(qkv).__name__)}")
    if not isinstance(q_out, torch.Tensor) or q_out.dim() != 4:
        raise ValueError(f"q_out must be a tensor of rank 4 [B, S, Hq, D], got "
                         f"{getattr(q_out, 'shape', type(q_out).__name__)}")
    batch, seq_len, width = qkv.shape
    _, kv_heads, max_len, head_dim = key_cache.shape
    q_heads = q_out.shape[2]
    if tuple(q_out.shape) != (batch, seq_len, q_heads, head_dim):
        raise ValueError(f"q_out shape {tuple(q_out.shape)} must be [B={batch}, S={seq_len}, Hq, D={head_dim}]")
    if width != (q_heads + 2 * kv_heads) * head_dim:
        raise ValueError(f"qkv width {width} is not (Hq + 2*Hkv) * D = ({q_heads} + 2*{kv_heads}) * {head_dim}")
    if value_cache.shape != key_cache.shape or key_cache.shape[0] < batch:
        raise ValueError(f"key_cache {tuple(key_cache.shape)} and value_cache {tuple(value_cache.shape)} must "
                         f"match and hold at least {batch} sequences")
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim}")
    check_tables(cos, sin, head_dim)
    for name, t in (("qkv", qkv), ("q_out", q_out), ("cos", cos), ("sin", sin), ("value_cache", value_cache)):
        _validate.check_same(name, t, "key_cache", key_cache)
        _validate.check_contiguous_last_dim(name, t)
    _validate.check_contiguous_last_dim("key_cache", key_cache)
    _validate.check_lengths("write_pos", write_pos, batch, qkv.device)
    _validate.check_lengths("kv_start", kv_start, batch, qkv.device)
    if batch == 0 or seq_len == 0:
        return q_out
    _rope_append_kernel[(seq_len, batch)](
        QKV=qkv, Cos=cos, Sin=sin, KCache=key_cache, VCache=value_cache, QOut=q_out, WritePos=write_pos,
        KvStart=kv_start,
        stride_xb=qkv.stride(0), stride_xs=qkv.stride(1),
        stride_cb=key_cache.stride(0), stride_ch=key_cache.stride(1), stride_cs=key_cache.stride(2),
        stride_vb=value_cache.stride(0), stride_vh=value_cache.stride(1), stride_vs=value_cache.stride(2),
        stride_qb=q_out.stride(0), stride_qs=q_out.stride(1), stride_qh=q_out.stride(2),
        stride_table=cos.stride(0),
        seq_len=seq_len, max_len=max_len, max_positions=cos.shape[0],
        Q_HEADS=q_heads, KV_HEADS=kv_heads, Q_HEADS_PADDED=max(1, triton.next_power_of_2(q_heads)),
        KV_HEADS_PADDED=max(1, triton.next_power_of_2(kv_heads)), HALF_DIM=head_dim // 2,
        HALF_PADDED=triton.next_power_of_2(head_dim // 2), HAS_KV_START=kv_start is not None,
        num_warps=4,
        enable_fp_fusion=False,  # no FMA contraction: every product is rounded on its own, as torch's ops round it
    )
    return q_out
