"""Causal GQA prefill / append attention: a FlashAttention-2 style forward pass.

One program computes BLOCK_M query rows of one query head, streaming key/value blocks of its KV head
(GQA by head mapping: query head h reads KV head h // GROUP_SIZE) with an online softmax in fp32.
Causal masking is aligned bottom-right: the Sq queries are the last Sq positions of the valid key range
[kv_start[b], kv_lens[b]), so the same kernel serves a full prefill, a chunked prefill and an append.
Key blocks wholly outside a program's visible range are skipped by the loop bounds, not computed; blocks
wholly inside it run without masks, so only the diagonal and the left-padding edge pay for masking.
Called once per layer per prompt chunk, the launcher goes through FastLaunch with validation cached per shape,
like decode's: at short prompts the host's launch time is otherwise longer than the kernel.
"""
import torch
import triton
import triton.language as tl

from flashcore import _validate
from flashcore._launch import FastLaunch, int_key, pointer_key
from flashcore._online_softmax import LOG2E, attend_block, finish, valid_key_range


@triton.jit
def _attend_masked(q, m_i, l_i, acc, start_n, offs_n, offs_d, mask_d, query_pos, kv_lo, kv_hi,
                   k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, qk_scale_log2,
                   IS_CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key block with every mask: valid range [kv_lo, kv_hi), padded head_dim, causal."""
    cols = start_n + offs_n
    col_ok = (cols >= kv_lo) & (cols < kv_hi)
    visible = col_ok[None, :]
    if IS_CAUSAL:
        visible = visible & (cols[None, :] <= query_pos[:, None])
    return attend_block(
        q, m_i, l_i, acc,
        k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, col_ok[None, :] & mask_d[:, None],
        v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd, col_ok[:, None] & mask_d[None, :],
        visible, qk_scale_log2, DOT_PRECISION, LOAD_V_WITH_K=False, MASKED=True)


# Lengths change every call (a new prompt, a new chunk) and head counts between models: never specialised, so one
# compiled variant serves them all.
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
    WRITE_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr, EVEN_HEAD_DIM: tl.constexpr,
):
    tl.static_assert(BLOCK_N >= 16)
    # torch.compile hands a Python float over as fp64; keep the softmax state in fp32 whatever the caller
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    start_m = tl.program_id(0)
    if IS_CAUSAL:  # the last query blocks see the most keys: start them first, so that no long one runs alone
        start_m = tl.num_programs(0) - 1 - start_m
    off_bh = tl.program_id(1)
    off_b = off_bh // q_heads
    off_hq = off_bh % q_heads
    off_hkv = off_hq // GROUP_SIZE

    # Valid keys of this sequence: [kv_lo, kv_hi). Queries sit at the last q_len positions of it.
    kv_lo, kv_hi = valid_key_range(KvLens, KvStart, off_b, kv_len, HAS_KV_LENS, HAS_KV_START)

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

    # Blocks in [full_lo, full_hi) are wholly valid and, causally, visible to every row of this program: they
    # run without masks. The rest of [lo, hi) (the left-padding edge and the diagonal) runs masked.
    full_lo = tl.cdiv(kv_lo, BLOCK_N) * BLOCK_N
    full_hi = (kv_hi // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:  # up to the first row's position (queries sit at the end of [kv_lo, kv_hi))
        full_hi = tl.minimum(full_hi, (tl.maximum(kv_hi - q_len + start_m * BLOCK_M + 1, 0) // BLOCK_N) * BLOCK_N)
    if not EVEN_HEAD_DIM:  # a padded head_dim needs its load masks everywhere
        full_hi = full_lo
    full_hi = tl.maximum(full_hi, full_lo)

    for start_n in range(lo, tl.minimum(full_lo, hi), BLOCK_N):
        m_i, l_i, acc = _attend_masked(q, m_i, l_i, acc, start_n, offs_n, offs_d, mask_d, query_pos, kv_lo, kv_hi,
                                       k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, qk_scale_log2,
                                       IS_CAUSAL, DOT_PRECISION)
    for start_n in range(full_lo, full_hi, BLOCK_N):
        cols = start_n + offs_n
        m_i, l_i, acc = attend_block(
            q, m_i, l_i, acc,
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, None,
            v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd, None,
            None, qk_scale_log2, DOT_PRECISION, LOAD_V_WITH_K=False, MASKED=False)
    for start_n in range(full_hi, hi, BLOCK_N):
        m_i, l_i, acc = _attend_masked(q, m_i, l_i, acc, start_n, offs_n, offs_d, mask_d, query_pos, kv_lo, kv_hi,
                                       k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd, qk_scale_log2,
                                       IS_CAUSAL, DOT_PRECISION)

    # Rows that saw no valid key (left padding) are written as zeros with log-sum-exp -inf.
    out, lse_log2 = finish(m_i, l_i, acc)
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_hq.to(tl.int64) * stride_oh \
        + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=(offs_m[:, None] < q_len) & mask_d[None, :])
    if WRITE_LSE:  # stored as a natural log: log2 domain times ln 2
        tl.store(Lse + off_bh.to(tl.int64) * q_len + offs_m, lse_log2 * 0.6931471805599453, mask=offs_m < q_len)


_prefill_launch = FastLaunch(_prefill_fwd_kernel)


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
    batch, q_heads, kv_heads, q_len, kv_len, head_dim = _validate.check_attention_call(query, key, value, kv_lens,
                                                                                       kv_start)
    if causal and q_len > kv_len:
        raise ValueError(f"causal attention needs query length ({q_len}) <= key length ({kv_len}): "
                         "queries are aligned to the last key positions")
    scale = _validate.check_scale(scale, head_dim)
    _validate.check_out(out, query.shape, query.dtype, query.device)
    if out is None:
        out = torch.empty(batch, q_len, q_heads, head_dim, dtype=query.dtype, device=query.device).transpose(1, 2)
    lse = torch.empty(batch, q_heads, q_len, dtype=torch.float32, device=query.device) if return_lse else None
    if batch == 0 or q_len == 0:
        return (out, lse) if return_lse else out

    head_dim_padded = triton.next_power_of_2(head_dim)
    block_m, block_n, num_warps, num_stages = _launch_config(head_dim_padded, query.device.type == "cuda")
    strides = (*query.stride(), *key.stride(), *value.stride(), *out.stride())
    ints = int_key(strides)
    launch_key = None if ints is None else (
        query.dtype, head_dim, q_heads // kv_heads, block_m, block_n, num_warps, num_stages, causal, return_lse,
        kv_lens is not None, kv_start is not None, ints, *(pointer_key(t) for t in (query, key, value, out, lse,
                                                                                     kv_lens, kv_start)))
    _prefill_launch.launch(
        (triton.cdiv(q_len, block_m), batch * q_heads),
        (query, key, value, out, lse, kv_lens, kv_start, *strides, q_heads, q_len, kv_len, scale * LOG2E),
        launch_key,
        lambda: dict(GROUP_SIZE=q_heads // kv_heads, HEAD_DIM=head_dim, HEAD_DIM_PADDED=head_dim_padded,
                     BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=causal, HAS_KV_LENS=kv_lens is not None,
                     HAS_KV_START=kv_start is not None, WRITE_LSE=return_lse,
                     DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
                     EVEN_HEAD_DIM=head_dim == head_dim_padded, num_warps=num_warps, num_stages=num_stages))
    return (out, lse) if return_lse else out
