"""What the prefill and decode kernels share: a sequence's valid key range, and the online-softmax step
(FlashAttention-2): fold one key/value block into the running (row max, denominator, accumulator), and the closing
normalisation."""
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # scores are kept in the log2 domain, where exp2 is the fast instruction


@triton.jit
def valid_key_range(KvLens, KvStart, off_b, kv_len, HAS_KV_LENS: tl.constexpr, HAS_KV_START: tl.constexpr):
    """The keys sequence off_b may see, [kv_lo, kv_hi): its kv_lens entry capped at the cache's kv_len (all of it
    without one), from its kv_start entry (left padding; 0 without one, and never below 0)."""
    kv_hi = kv_len
    if HAS_KV_LENS:
        kv_hi = tl.minimum(tl.load(KvLens + off_b), kv_len)
    kv_lo = 0
    if HAS_KV_START:
        kv_lo = tl.maximum(tl.load(KvStart + off_b), 0)
    return kv_lo, kv_hi


@triton.jit
def attend_block(q, m_i, l_i, acc, kt_ptrs, kt_mask, v_ptrs, v_mask, visible, qk_scale_log2,
                 DOT_PRECISION: tl.constexpr, LOAD_V_WITH_K: tl.constexpr, MASKED: tl.constexpr):
    """q [M, D]; kt_ptrs [D, N] (the key block, transposed); v_ptrs [N, D]; visible [M, N] (broadcastable):
    which scores count. Scores live in the log2 domain: qk_scale_log2 is the softmax scale times log2(e).

    MASKED=False is for a block every row sees in full, with no padded head_dim: the loads and scores go
    unmasked (the masks are ignored), which saves the selects that a causal kernel otherwise runs on every block.
    LOAD_V_WITH_K issues the value load beside the key load, so that both wait on memory together: worth it
    where a program has one or two blocks and no loop to pipeline (decode at short caches); a long loop
    (prefill) is better served by the pipeliner with V loaded where it is used."""
    if LOAD_V_WITH_K:
        v = _load(v_ptrs, v_mask, MASKED)
    kt = _load(kt_ptrs, kt_mask, MASKED)
    m_new, l_i, p, alpha = softmax_step(q, m_i, l_i, kt, visible, qk_scale_log2, DOT_PRECISION, MASKED)
    if not LOAD_V_WITH_K:
        v = _load(v_ptrs, v_mask, MASKED)
    return m_new, l_i, accumulate(acc, alpha, p, v, DOT_PRECISION)


@triton.jit
def softmax_step(q, m_i, l_i, kt, visible, qk_scale_log2, DOT_PRECISION: tl.constexpr, MASKED: tl.constexpr):
    """The scores of q against one loaded key block kt [D, N]: (new row max, new denominator, probabilities p,
    alpha, the factor that rescales what was accumulated under the old max)."""
    qk = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale_log2
    if MASKED:
        qk = tl.where(visible, qk, float("-inf"))
    # the new row max; a row with nothing visible yet keeps -inf and must add exactly zero
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(qk - m_safe[:, None])
    return m_new, l_i * alpha + tl.sum(p, 1), p, alpha


@triton.jit
def accumulate(acc, alpha, p, v, DOT_PRECISION: tl.constexpr):
    """acc rescaled by alpha, plus p · v for one loaded value block v [N, D]."""
    return acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)


@triton.jit
def _load(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        block = tl.load(ptrs, mask=mask, other=0.0)
    else:
        block = tl.load(ptrs)
    return block


@triton.jit
def finish(m_i, l_i, acc):
    """(normalised output, log-sum-exp in the log2 domain); a row that saw no key gives zeros and -inf."""
    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    lse_log2 = tl.where(has_keys, m_i + tl.math.log2(l_safe), float("-inf"))
    return acc / l_safe[:, None], lse_log2
