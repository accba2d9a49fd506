"""Causal GQA prefill for Hopper and newer GPUs: the same attention as prefill.py, with every tile moved by the
tensor-memory accelerator (TMA) through tensor descriptors.

A descriptor load copies a whole [rows, head_dim] tile from memory to shared memory in one asynchronous
operation, which the software pipeline keeps several tiles ahead, and the tensor cores read it from there: no
per-thread address arithmetic, no load masks. What the masks did, the descriptors' bounds do:
* each (sequence, head) gets descriptors of its own, whose rows start at the first valid key (kv_start) and end
  at the last (kv_lens), so a tile reaching past either end reads zeros, never the cache outside that range;
* a head_dim that is not a power of two is read as the next power of two, the extra columns as zeros;
* query rows past the prompt read zeros, and their output rows are not written.
Key positions inside the kernel are therefore relative to the first valid key. As in prefill.py, blocks every
query row sees in full run without masks; only the diagonal block(s) and the ragged last block are masked.

Conditions (else prefill.py's pointer kernel runs): fp16 or bf16, a unit stride on head_dim, 16-byte aligned
pointers and other strides. Descriptors made on the device need a little global scratch memory per launch,
which Triton asks of the allocator set with triton.set_allocator; FlashCore sets one that takes it from
PyTorch's caching allocator (so CUDA-graph capture works), unless the caller has set their own.
"""
import torch
import triton
import triton.language as tl
from triton.runtime import _allocation

from flashcore._launch import FastLaunch, hopper_or_newer, int_key, pointer_key
from flashcore._online_softmax import finish, softmax_step

ENABLED = True  # the TMA kernel where it applies (a switch for side-by-side measurements)


@triton.jit
def _attend_tile(q, m_i, l_i, acc, k_desc, v_desc, start_n, visible, qk_scale_log2, MASKED: tl.constexpr):
    """Fold key/value rows [start_n, start_n + BLOCK_N) into the running softmax state."""
    k = k_desc.load([start_n, 0])
    qk = tl.dot(q, k.T) * qk_scale_log2
    if MASKED:
        qk = tl.where(visible, qk, float("-inf"))
    p, alpha, m_i, l_i = softmax_step(qk, m_i, l_i)
    v = v_desc.load([start_n, 0])
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_i, l_i, acc


# Lengths change every call (a new prompt, a new chunk): compile once for all of them.
@triton.jit(do_not_specialize=["q_heads", "q_len", "kv_len"])
def _prefill_tma_kernel(
    Q, K, V, Out, Lse, KvLens, KvStart,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    q_heads, q_len, kv_len, qk_scale_log2,
    GROUP_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, HAS_KV_LENS: tl.constexpr, HAS_KV_START: tl.constexpr, WRITE_LSE: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)  # torch.compile hands a Python float over as fp64
    start_m = tl.program_id(0)
    if IS_CAUSAL:  # the last query blocks see the most keys: start them first, so that no long one runs alone
        start_m = tl.num_programs(0) - 1 - start_m
    off_bh = tl.program_id(1)
    off_b = off_bh // q_heads
    off_hq = off_bh % q_heads
    off_hkv = off_hq // GROUP_SIZE

    # Valid keys of this sequence: [kv_lo, kv_hi), numbered from 0 at kv_lo. Queries are the last q_len of them.
    kv_hi = kv_len
    if HAS_KV_LENS:
        kv_hi = tl.minimum(tl.load(KvLens + off_b), kv_len)
    kv_lo = 0
    if HAS_KV_START:
        kv_lo = tl.maximum(tl.load(KvStart + off_b), 0)
    n_keys = tl.maximum(kv_hi - kv_lo, 0)

    q_desc = tl.make_tensor_descriptor(
        Q + off_b.to(tl.int64) * stride_qb + off_hq.to(tl.int64) * stride_qh,
        shape=[q_len, HEAD_DIM], strides=[stride_qm, 1], block_shape=[BLOCK_M, HEAD_DIM_PADDED])
    k_desc = tl.make_tensor_descriptor(
        K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh + kv_lo.to(tl.int64) * stride_kn,
        shape=[tl.maximum(n_keys, 1), HEAD_DIM], strides=[stride_kn, 1], block_shape=[BLOCK_N, HEAD_DIM_PADDED])
    v_desc = tl.make_tensor_descriptor(
        V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh + kv_lo.to(tl.int64) * stride_vn,
        shape=[tl.maximum(n_keys, 1), HEAD_DIM], strides=[stride_vn, 1], block_shape=[BLOCK_N, HEAD_DIM_PADDED])
    o_desc = tl.make_tensor_descriptor(
        Out + off_b.to(tl.int64) * stride_ob + off_hq.to(tl.int64) * stride_oh,
        shape=[q_len, HEAD_DIM], strides=[stride_om, 1], block_shape=[BLOCK_M, HEAD_DIM_PADDED])

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    query_pos = n_keys - q_len + offs_m  # each query row's key position (negative: a row of left padding)
    q = q_desc.load([start_m * BLOCK_M, 0])

    # Keys this block of queries can see: [0, hi). Blocks in [0, full_hi) are visible to every row in full.
    hi = n_keys
    full_hi = (n_keys // BLOCK_N) * BLOCK_N
    if IS_CAUSAL:
        hi = tl.minimum(n_keys, n_keys - q_len + (start_m + 1) * BLOCK_M)
        full_hi = tl.minimum(full_hi, (tl.maximum(n_keys - q_len + start_m * BLOCK_M + 1, 0) // BLOCK_N) * BLOCK_N)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 domain)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running softmax denominator
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PADDED], dtype=tl.float32)
    for start_n in tl.range(0, full_hi, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        m_i, l_i, acc = _attend_tile(q, m_i, l_i, acc, k_desc, v_desc, start_n, None, qk_scale_log2, MASKED=False)
    for start_n in range(full_hi, hi, BLOCK_N):
        cols = start_n + offs_n
        visible = cols[None, :] < n_keys
        if IS_CAUSAL:
            visible = visible & (cols[None, :] <= query_pos[:, None])
        m_i, l_i, acc = _attend_tile(q, m_i, l_i, acc, k_desc, v_desc, start_n, visible, qk_scale_log2,
                                     MASKED=True)

    # Rows that saw no valid key (left padding) are written as zeros with log-sum-exp -inf.
    out, lse_log2 = finish(m_i, l_i, acc)
    o_desc.store([start_m * BLOCK_M, 0], out.to(Out.dtype.element_ty))
    if WRITE_LSE:  # stored as a natural log: log2 domain times ln 2
        tl.store(Lse + off_bh.to(tl.int64) * q_len + offs_m, lse_log2 * 0.6931471805599453, mask=offs_m < q_len)


_launch = FastLaunch(_prefill_tma_kernel)


def launch_config(head_dim_padded):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize) on a Hopper GPU."""
    if head_dim_padded <= 64:
        return 128, 64, 4, 3, False
    return 128, 64, 8, 3, False


def applies(query, key, value, out):
    """Whether the TMA kernel can run these tensors (see the module docstring), on this device."""
    if not ENABLED or query.dtype not in (torch.float16, torch.bfloat16) or not hopper_or_newer(query.device):
        return False
    return all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0
               and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1]) for t in (query, key, value, out))


def _scratch(size, alignment, stream):
    """Global scratch for descriptors made on the device, from PyTorch's caching allocator."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def launch(query, key, value, out, lse, kv_lens, kv_start, scale_log2, causal):
    """Run the kernel on validated arguments (prefill.prefill_attention's checks), writing out (and lse)."""
    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        triton.set_allocator(_scratch)
    batch, q_heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    head_dim_padded = triton.next_power_of_2(head_dim)
    block_m, block_n, num_warps, num_stages, warp_specialize = launch_config(head_dim_padded)
    strides = (query.stride(0), query.stride(1), query.stride(2), key.stride(0), key.stride(1), key.stride(2),
               value.stride(0), value.stride(1), value.stride(2), out.stride(0), out.stride(1), out.stride(2))
    ints = int_key(strides)
    key_ = None if ints is None else (
        query.dtype, head_dim, q_heads // kv_heads, block_m, block_n, num_warps, num_stages, warp_specialize,
        causal, ints, *(pointer_key(t) for t in (lse, kv_lens, kv_start)))
    _launch.launch(
        (triton.cdiv(q_len, block_m), batch * q_heads),
        (query, key, value, out, lse, kv_lens, kv_start, *strides, q_heads, q_len, kv_len, scale_log2),
        key_,
        lambda: dict(GROUP_SIZE=q_heads // kv_heads, HEAD_DIM=head_dim, HEAD_DIM_PADDED=head_dim_padded,
                     BLOCK_M=block_m, BLOCK_N=block_n, IS_CAUSAL=causal, HAS_KV_LENS=kv_lens is not None,
                     HAS_KV_START=kv_start is not None, WRITE_LSE=lse is not None,
                     WARP_SPECIALIZE=warp_specialize, num_warps=num_warps, num_stages=num_stages))
