"""Split-K GQA decode attention ("flash decoding") over a KV cache.

A decode step has one query row per head, far too little work for one program per head to fill a GPU.
So the key range of each (sequence, KV head) is split across `splits` programs. Each program handles all
GROUP_SIZE query heads of its KV head together, so every K/V byte is read once, and writes a partial output
with its log-sum-exp to a workspace; the last split to finish (counted by an atomic per sequence and KV head)
merges them, so one launch does the whole step and no second kernel is needed.

Splits take key blocks round-robin (split s reads blocks s, s + splits, ...) up to the sequence's
length, which is read on the device: the work is balanced for any length, the launch never waits on the
host, and one launch serves every step of a CUDA graph over a static cache.
"""
import functools
import math

import torch
import triton
import triton.language as tl

from flashcore import _validate
from flashcore._launch import FastLaunch
from flashcore._online_softmax import LOG2E, attend_block, finish

DECODE_BLOCK_N = 64
MAX_SPLITS = 64
MIN_BLOCKS_PER_SPLIT = 4


def num_splits(batch, kv_heads, max_len, sm_count, block_n=DECODE_BLOCK_N):
    """How many programs share one (sequence, KV head)'s keys. Pure: a function of its arguments only.

    About one wave of programs over the SMs (measured on the H100 at 32K keys: 16 splits of the 8B's 8 KV heads
    beat 32, 48 and 64), but at least MIN_BLOCKS_PER_SPLIT key blocks per split, so that short caches are not
    cut into splits whose set-up and merge cost more than their keys, and never more than MAX_SPLITS.
    """
    for name, value in (("batch", batch), ("kv_heads", kv_heads), ("max_len", max_len),
                        ("sm_count", sm_count), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    programs = batch * kv_heads
    wanted = math.ceil(sm_count / programs)
    return max(1, min(wanted, math.ceil(max_len / (MIN_BLOCKS_PER_SPLIT * block_n)), MAX_SPLITS))


_INT_PARAMS = ["stride_qb", "stride_qh", "stride_kb", "stride_kh", "stride_kn", "stride_vb", "stride_vh",
               "stride_vn", "stride_ob", "stride_oh", "kv_heads", "kv_len", "num_splits"]


# Every int is typed (32-bit: the launcher refuses larger strides) and never specialised, so that one compiled
# kernel serves every length, split count and layout, and FastLaunch can reuse it without re-deriving Triton's
# specialisation on each call. (64-bit strides made every [D, BLOCK_N] pointer tile 64-bit: on the H100 that
# spilled registers and ran 2.5x slower.)
@triton.jit(do_not_specialize=_INT_PARAMS, do_not_specialize_on_alignment=["KvLens", "KvStart"])
def _decode_kernel(
    Q, K, V, Out, PartialOut, PartialLse, Counters, KvLens, KvStart,
    stride_qb: tl.int32, stride_qh: tl.int32,
    stride_kb: tl.int32, stride_kh: tl.int32, stride_kn: tl.int32,
    stride_vb: tl.int32, stride_vh: tl.int32, stride_vn: tl.int32,
    stride_ob: tl.int32, stride_oh: tl.int32,
    kv_heads: tl.int32, kv_len: tl.int32, num_splits: tl.int32, qk_scale_log2,
    GROUP_SIZE: tl.constexpr, BLOCK_H: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr, BLOCK_N: tl.constexpr, SPLITS_PADDED: tl.constexpr,
    HAS_KV_LENS: tl.constexpr, HAS_KV_START: tl.constexpr, STRIDES_ALIGNED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Every tensor's last dimension is contiguous (the launcher makes sure), so no head_dim strides.
    STRIDES_ALIGNED: every stride is a multiple of 16 elements, so rows start 16-byte aligned (wide loads)."""
    tl.static_assert(BLOCK_H >= GROUP_SIZE)
    if STRIDES_ALIGNED:
        stride_qh = tl.multiple_of(stride_qh, 16)
        stride_kn = tl.multiple_of(stride_kn, 16)
        stride_vn = tl.multiple_of(stride_vn, 16)
        stride_oh = tl.multiple_of(stride_oh, 16)
        stride_qb = tl.multiple_of(stride_qb, 16)
        stride_kb = tl.multiple_of(stride_kb, 16)
        stride_kh = tl.multiple_of(stride_kh, 16)
        stride_vb = tl.multiple_of(stride_vb, 16)
        stride_vh = tl.multiple_of(stride_vh, 16)
        stride_ob = tl.multiple_of(stride_ob, 16)
    # torch.compile hands a Python float over as fp64; keep the softmax state in fp32 whatever the caller
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    split = tl.program_id(0)
    off_bh = tl.program_id(1)  # (sequence, KV head)
    off_b = off_bh // kv_heads
    off_hkv = off_bh % kv_heads

    kv_hi = kv_len
    if HAS_KV_LENS:
        kv_hi = tl.minimum(tl.load(KvLens + off_b), kv_len)
    kv_lo = 0
    if HAS_KV_START:
        kv_lo = tl.maximum(tl.load(KvStart + off_b), 0)

    offs_h = tl.arange(0, BLOCK_H)  # query heads of this KV group (padded up to a dot-friendly 16)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PADDED)
    mask_h = offs_h < GROUP_SIZE
    mask_d = offs_d < HEAD_DIM
    q_heads = off_hkv * GROUP_SIZE + offs_h

    q_ptrs = Q + off_b.to(tl.int64) * stride_qb + q_heads[:, None].to(tl.int64) * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=mask_h[:, None] & mask_d[None, :], other=0.0)
    k_base = K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh
    v_base = V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM_PADDED], dtype=tl.float32)

    first_block = kv_lo // BLOCK_N
    for start_n in range((first_block + split) * BLOCK_N, kv_hi, num_splits * BLOCK_N):
        cols = start_n + offs_n
        col_ok = (cols >= kv_lo) & (cols < kv_hi)
        m_i, l_i, acc = attend_block(
            q, m_i, l_i, acc,
            k_base + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None], col_ok[None, :] & mask_d[:, None],
            v_base + cols[:, None].to(tl.int64) * stride_vn + offs_d[None, :], col_ok[:, None] & mask_d[None, :],
            col_ok[None, :], qk_scale_log2, DOT_PRECISION)

    # Partial result, normalised within the split; a split with no keys gives zeros and lse -inf.
    out, lse_log2 = finish(m_i, l_i, acc)
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + q_heads[:, None].to(tl.int64) * stride_oh + offs_d[None, :]
    o_mask = mask_h[:, None] & mask_d[None, :]
    if num_splits == 1:
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=o_mask)
    else:
        rows = (off_b * kv_heads * GROUP_SIZE + q_heads).to(tl.int64) * num_splits  # [B, Hq, splits] order
        tl.store(PartialOut + (rows + split)[:, None] * HEAD_DIM_PADDED + offs_d[None, :], out, mask=mask_h[:, None])
        tl.store(PartialLse + rows + split, lse_log2, mask=mask_h)
        # Arrive: every thread's partial stores are ordered before the (acq_rel, gpu-scope) counter increment.
        tl.debug_barrier()
        arrived = tl.atomic_add(Counters + off_bh, 1)
        if arrived == num_splits - 1:  # the last split merges the others by log-sum-exp, then re-arms
            tl.store(Counters + off_bh, 0)
            offs_s = tl.arange(0, SPLITS_PADDED)
            mask_s = offs_s < num_splits
            for h in tl.static_range(GROUP_SIZE):  # unrolled: every head's loads can be in flight together
                head_rows = (off_b * kv_heads * GROUP_SIZE + off_hkv * GROUP_SIZE + h).to(tl.int64) * num_splits
                # .cg: read from L2, never from this SM's L1, which may hold another call's partials
                lse = tl.load(PartialLse + head_rows + offs_s, mask=mask_s, other=float("-inf"),
                              cache_modifier=".cg")
                parts = tl.load(PartialOut + (head_rows + offs_s)[:, None] * HEAD_DIM_PADDED + offs_d[None, :],
                                mask=mask_s[:, None], other=0.0, cache_modifier=".cg")
                lse_max = tl.max(lse, 0)
                w = tl.math.exp2(lse - tl.where(lse_max == float("-inf"), 0.0, lse_max))
                total = tl.sum(w, 0)
                merged = tl.sum(parts * w[:, None], 0) / tl.where(total > 0.0, total, 1.0)
                o_row = Out + off_b.to(tl.int64) * stride_ob + (off_hkv * GROUP_SIZE + h).to(tl.int64) * stride_oh
                tl.store(o_row + offs_d, merged.to(Out.dtype.element_ty), mask=mask_d)


_decode_launch = FastLaunch(_decode_kernel)


class DecodeWorkspace:
    """Scratch memory of split-K decode, reused across calls so that a call (or a captured CUDA graph)
    allocates nothing: partial outputs and log-sum-exps for ``rows`` (sequence, query head) pairs times
    ``max_splits``, and one arrival counter per (sequence, KV head), zero between calls (the merging program
    resets its counter). One workspace must not serve two launches that run at the same time."""

    def __init__(self, rows, kv_programs, head_dim, max_splits=MAX_SPLITS, device=None):
        head_dim_padded = triton.next_power_of_2(head_dim)
        self.max_splits = max_splits
        self.partial_out = torch.empty(rows * max_splits, head_dim_padded, dtype=torch.float32, device=device)
        self.partial_lse = torch.empty(rows * max_splits, dtype=torch.float32, device=device)
        self.counters = torch.zeros(kv_programs, dtype=torch.int32, device=device)

    @classmethod
    def for_shape(cls, batch, q_heads, kv_heads, head_dim, max_splits=MAX_SPLITS, device=None):
        return cls(batch * q_heads, batch * kv_heads, head_dim, max_splits, device)

    def fits(self, rows, kv_programs, head_dim_padded, splits):
        return (self.partial_out.shape[1] == head_dim_padded and rows * splits <= self.partial_lse.shape[0]
                and kv_programs <= self.counters.shape[0])


# Default workspaces, one per device (launches on a device run in stream order, so they can share it), grown
# on demand. A grown-out workspace is kept alive (not freed): a CUDA graph captured earlier may still use it.
_WORKSPACES = {}
_RETIRED_WORKSPACES = []


def _default_workspace(device, rows, kv_programs, head_dim_padded, splits):
    workspace = _WORKSPACES.get(device)
    if workspace is None or not workspace.fits(rows, kv_programs, head_dim_padded, splits):
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("decode_attention needs a larger workspace while a CUDA graph is being captured: "
                               "call it once with these shapes before capturing, or pass workspace=")
        if workspace is not None:
            _RETIRED_WORKSPACES.append(workspace)
        grown_rows = max(rows, workspace.partial_lse.shape[0] // MAX_SPLITS if workspace else 0)
        grown_programs = max(kv_programs, workspace.counters.shape[0] if workspace else 0)
        workspace = DecodeWorkspace(grown_rows, grown_programs, head_dim_padded, MAX_SPLITS, device)
        _WORKSPACES[device] = workspace
    return workspace


_SM_COUNT = {}


def sm_count(device):
    """Multiprocessors of a CUDA device (1 elsewhere). Read once per device."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    count = _SM_COUNT.get(index)
    if count is None:
        count = _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return count


def _last_dim_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


@functools.lru_cache(maxsize=256)
def _splits_for(batch, kv_heads, kv_len, device, block_n):
    return num_splits(max(batch, 1), kv_heads, kv_len, sm_count(device), block_n)


# Signatures (shapes, dtypes, devices, layouts of the length vectors) that passed validation: a call that
# matches one skips the checks, which would otherwise cost more host time than the kernel takes to run.
_VALIDATED = set()


def _layout(lengths):
    if lengths is None or not isinstance(lengths, torch.Tensor):
        return lengths is None  # a non-tensor is never in _VALIDATED: the full checks will name it
    return lengths.shape, lengths.dtype, lengths.device, lengths.stride()


def _validate_call(query, key, value, kv_lens, kv_start):
    if not (isinstance(query, torch.Tensor) and isinstance(key, torch.Tensor) and isinstance(value, torch.Tensor)):
        return _validate.check_qkv(query, key, value)  # raises, naming the argument
    signature = (query.shape, key.shape, value.shape, query.dtype, key.dtype, value.dtype, query.device,
                 key.device, value.device, _layout(kv_lens), _layout(kv_start))
    if signature in _VALIDATED:
        if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
            _validate.check_qkv(query, key, value)  # raises the inference-only error
        return query.shape[0], query.shape[1], key.shape[1], query.shape[2], key.shape[2], query.shape[3]
    dims = _validate.check_qkv(query, key, value)
    _validate.check_lengths("kv_lens", kv_lens, dims[0], query.device)
    _validate.check_lengths("kv_start", kv_start, dims[0], query.device)
    if signature[-1] is not False and signature[-2] is not False and not (query.requires_grad or key.requires_grad or value.requires_grad):
        _VALIDATED.add(signature)
    return dims


def decode_attention(query, key, value, *, kv_lens=None, kv_start=None, scale=None, splits=None, out=None,
                     workspace=None, block_n=DECODE_BLOCK_N):
    """One decode step: query [B, Hq, 1, D] over a cache key/value [B, Hkv, Skv, D] (Skv may be capacity).

    kv_lens: optional int32 [B] on the query's device, valid cache rows per sequence (default Skv; clamped to
        Skv). kv_start: optional int32 [B], first valid row (left padding). Neither is read on the host, so
        the call can be captured in a CUDA graph. The query attends every valid key (it is the newest token).
    splits: number of split-K programs per (sequence, KV head); default num_splits(B, Hkv, Skv, SM count).
    out: optional [B, Hq, 1, D] output. workspace: a DecodeWorkspace for the split partials (default: one
        kept per device, grown when needed); pass your own to capture the first call in a CUDA graph.
    block_n: keys per block (a tuning knob: a power of two in [16, 256]).
    Returns out [B, Hq, 1, D] (laid out [B, 1, Hq, D] in memory). A sequence with no valid key gives zeros.
    """
    batch, q_heads, kv_heads, q_len, kv_len, head_dim = _validate_call(query, key, value, kv_lens, kv_start)
    if q_len != 1:
        raise ValueError(f"decode_attention takes one query row per head (query seq length 1), got {q_len}")
    scale = head_dim ** -0.5 if scale is None else _validate.check_scale(scale, head_dim)
    if block_n not in (16, 32, 64, 128, 256):
        raise ValueError(f"block_n must be a power of two in [16, 256], got {block_n!r}")
    if splits is None:
        splits = _splits_for(batch, kv_heads, kv_len, query.device, block_n)
    elif isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= MAX_SPLITS:
        raise ValueError(f"splits must be an int in [1, {MAX_SPLITS}], got {splits!r}")
    if out is None:
        out = torch.empty(batch, 1, q_heads, head_dim, dtype=query.dtype, device=query.device).transpose(1, 2)
    else:
        _validate.check_out(out, query.shape, query.dtype, query.device)
    if batch == 0:
        return out
    if query.stride(3) != 1 or key.stride(3) != 1 or value.stride(3) != 1:
        query, key, value = _last_dim_contiguous(query), _last_dim_contiguous(key), _last_dim_contiguous(value)
    target = out if out.stride(3) == 1 else torch.empty_like(out, memory_format=torch.contiguous_format)

    head_dim_padded = triton.next_power_of_2(head_dim)
    if workspace is None:
        workspace = _default_workspace(query.device, batch * q_heads, batch * kv_heads, head_dim_padded, splits)
    elif not isinstance(workspace, DecodeWorkspace):
        raise TypeError(f"workspace must be a flashcore.DecodeWorkspace, got {type(workspace).__name__}")
    elif not workspace.fits(batch * q_heads, batch * kv_heads, head_dim_padded, splits):
        raise ValueError(f"workspace is too small for batch {batch}, {q_heads} query heads, head_dim {head_dim} "
                         f"and {splits} splits")
    elif workspace.counters.device != query.device:
        raise ValueError(f"workspace device {workspace.counters.device} does not match query device {query.device}")
    strides = (query.stride(0), query.stride(1), key.stride(0), key.stride(1), key.stride(2),
               value.stride(0), value.stride(1), value.stride(2), target.stride(0), target.stride(1))
    args = (query, key, value, target, workspace.partial_out, workspace.partial_lse, workspace.counters,
            kv_lens, kv_start, *strides, kv_heads, kv_len, splits, scale * LOG2E)
    if max(strides) >= 2 ** 31:
        raise ValueError(f"strides of query, key, value or out reach 2**31 elements ({strides}); use tensors with "
                         "smaller per-sequence strides")
    aligned = all(stride % 16 == 0 for stride in strides)
    splits_padded = triton.next_power_of_2(splits)
    launch_key = (query.dtype, q_heads // kv_heads, head_dim, block_n, splits_padded, kv_lens is not None,
                  kv_start is not None, aligned, query.data_ptr() % 16 == 0, key.data_ptr() % 16 == 0,
                  value.data_ptr() % 16 == 0, target.data_ptr() % 16 == 0)

    def constexprs():
        group = q_heads // kv_heads
        return dict(GROUP_SIZE=group, BLOCK_H=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
                    HEAD_DIM_PADDED=head_dim_padded, BLOCK_N=block_n, SPLITS_PADDED=splits_padded,
                    HAS_KV_LENS=kv_lens is not None, HAS_KV_START=kv_start is not None, STRIDES_ALIGNED=aligned,
                    DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",  # tf32: unused for 16-bit
                    num_warps=4, num_stages=3 if query.device.type == "cuda" else 1)

    _decode_launch.launch((splits, batch * kv_heads), args, launch_key, constexprs)
    if target is not out:
        out.copy_(target)
    return out
