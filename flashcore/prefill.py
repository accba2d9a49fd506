"""Causal GQA prefill / append attention: a FlashAttention-2 style forward pass.

One program computes BLOCK_M query rows of one query head, streaming key/value blocks of its KV head
(GQA by head mapping: query head h reads KV head h // GROUP_SIZE) with an online softmax in fp32.
Causal masking is aligned bottom-right: the Sq queries are the last Sq positions of the valid key range
[kv_start[b], kv_lens[b]), so the same kernel serves a full prefill, a chunked prefill and an append.
Key blocks wholly outside a program's visible range are skipped by the loop bounds, not computed.
"""
import torch
import triton
import triton.language as tl

from flashcore import _validate
from flashcore._online_softmax import LOG2E, attend_block, finish


# Lengths change every call (a new token, a new prompt): compile once for all of them.
@triton.jit(do_not_specialize=["q_heads", "q_len", "kv_len"])
def _prefill_fwd_kernel(
    Q, K, V, Out, Lse, KvLens, KvStart,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    q_heads, q_len, kv_len, qk_scale_log2,
    GROUP_SIZE: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_KV_LENS: tl.constexpr, HAS_KV_START: tl.constexpr,
    WRITE_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tl.static_assert(BLOCK_N >= 16)
    # torch.compile hands a Python float over as fp64; keep the softmax state in fp32 whatever the caller
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    off_b = off_bh // q_heads
    off_hq = off_bh % q_heads
    off_hkv = off_hq // GROUP_SIZE

    # Valid keys of this sequence: [kv_lo, kv_hi). Queries sit at the last q_len positions of it.
    kv_hi = kv_len
    if HAS_KV_LENS:
        kv_hi = tl.minimum(tl.load(KvLens + off_b), kv_len)
    kv_lo = 0
    if HAS_KV_START:
        kv_lo = tl.maximum(tl.load(KvStart + off_b), 0)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PADDED)
    mask_d = offs_d < HEAD_DIM
    query_pos = kv_hi - q_len + offs_m  # absolute position of each query row

    q_base = Q + off_b.to(tl.int64) * stride_qb + off_hq.to(tl.int64) * stride_qh
    k_base = K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh
    v_base = V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh
    q_ptrs = q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < q_len) & mask_d[None, :], other=0.0)

    # Key range this block of queries can see; blocks outside it are never visited.
    lo = (kv_lo // BLOCK_N) * BLOCK_N
    hi = kv_hi
    if IS_CAUSAL:
        hi = tl.minimum(kv_hi, kv_hi - q_len + (start_m + 1) * BLOCK_M)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PADDED], dtype=tl.float32)

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        col_ok = (cols >= kv_lo) & (cols < kv_hi)
        visible = col_ok[None, :]
        if IS_CAUSAL:
            visible = visible & (cols[None, :] <= query_pos[:, None])
        m_i, l_i, acc = attend_block(
            q, m_i, l_i, acc,
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, col_ok[None, :] & mask_d[:, None],
            v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd, col_ok[:, None] & mask_d[None, :],
            visible, qk_scale_log2, DOT_PRECISION, LOAD_V_WITH_K=False)

    # Rows that saw no valid key (left padding) are written as zeros with log-sum-exp -inf.
    out, lse_log2 = finish(m_i, l_i, acc)
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_hq.to(tl.int64) * stride_oh \
        + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=(offs_m[:, None] < q_len) & mask_d[None, :])
    if WRITE_LSE:  # stored as a natural log: log2 domain times ln 2
        tl.store(Lse + off_bh.to(tl.int64) * q_len + offs_m, lse_log2 * 0.6931471805599453, mask=offs_m < q_len)


def _launch_config(head_dim_padded, on_gpu):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages). The interpreter favours few, large blocks."""
    if not on_gpu:
        return 64, 64, 4, 1
    if head_dim_padded <= 64:
        return 128, 64, 4, 3
    if head_dim_padded <= 128:
        return 128, 64, 8, 3
    return 64, 32, 4, 2


def prefill_attention(query, key, value, *, causal=True, scale=None, kv_lens=None, kv_start=None,
                      return_lse=False, out=None):
    """Attention of query [B, Hq, Sq, D] over key/value [B, Hkv, Skv, D] (GQA: Hq % Hkv == 0).

    causal: bottom-right aligned, the queries being the last Sq positions of the valid keys.
    kv_lens: optional int32 [B] on the query's device, valid keys per sequence (default Skv); values above
        Skv are clamped to Skv. kv_start: optional int32 [B], first valid key (left padding).
    scale: softmax scale (default 1/sqrt(D)). out: optional [B, Hq, Sq, D] tensor to write into.
    Strided views are read as they are (no copy). Returns out, or (out, lse [B, Hq, Sq] fp32) with return_lse;
    a query row that sees no valid key gives zeros and lse -inf.
    The output is laid out as [B, Sq, Hq, D] in memory, so ``out.transpose(1, 2)`` is contiguous.
    """
    batch, q_heads, kv_heads, q_len, kv_len, head_dim = _validate.check_qkv(query, key, value)
    if causal and q_len > kv_len:
        raise ValueError(f"causal attention needs query length ({q_len}) <= key length ({kv_len}): "
                         "queries are aligned to the last key positions")
    _validate.check_lengths("kv_lens", kv_lens, batch, query.device)
    _validate.check_lengths("kv_start", kv_start, batch, query.device)
    scale = _validate.check_scale(scale, head_dim)
    _validate.check_out(out, query.shape, query.dtype, query.device)
    if out is None:
        out = torch.empty(batch, q_len, q_heads, head_dim, dtype=query.dtype, device=query.device).transpose(1, 2)
    lse = torch.empty(batch, q_heads, q_len, dtype=torch.float32, device=query.device) if return_lse else None
    if batch == 0 or q_len == 0:
        return (out, lse) if return_lse else out

    head_dim_padded = triton.next_power_of_2(head_dim)
    block_m, block_n, num_warps, num_stages = _launch_config(head_dim_padded, query.device.type == "cuda")
    grid = (triton.cdiv(q_len, block_m), batch * q_heads)
    _prefill_fwd_kernel[grid](
        Q=query, K=key, V=value, Out=out, Lse=lse, KvLens=kv_lens, KvStart=kv_start,
        stride_qb=query.stride(0), stride_qh=query.stride(1), stride_qm=query.stride(2), stride_qd=query.stride(3),
        stride_kb=key.stride(0), stride_kh=key.stride(1), stride_kn=key.stride(2), stride_kd=key.stride(3),
        stride_vb=value.stride(0), stride_vh=value.stride(1), stride_vn=value.stride(2), stride_vd=value.stride(3),
        stride_ob=out.stride(0), stride_oh=out.stride(1), stride_om=out.stride(2), stride_od=out.stride(3),
        q_heads=q_heads, q_len=q_len, kv_len=kv_len, qk_scale_log2=scale * LOG2E,
        GROUP_SIZE=q_heads // kv_heads, HEAD_DIM=head_dim, HEAD_DIM_PADDED=head_dim_padded,
        BLOCK_M=block_m, BLOCK_N=block_n,
        IS_CAUSAL=causal, HAS_KV_LENS=kv_lens is not None, HAS_KV_START=kv_start is not None,
        WRITE_LSE=return_lse, DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    return (out, lse) if return_lse else out
