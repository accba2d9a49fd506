"""Split-K GQA decode attention ("flash decoding") over a KV cache.

A decode step has one query row per head, far too little work for one program per head to fill a GPU.
So the key range of each (sequence, KV head) is split across `splits` programs. Each program handles all
GROUP_SIZE query heads of its KV head together, so every K/V byte is read once, and writes a partial output
with its log-sum-exp; a second small kernel merges the partials. With one split the split kernel writes the output
itself, and nothing else runs (the default from Python at short caches, where a call's time is the host's).

Splits take key blocks round-robin (split s reads blocks s, s + splits, ...) up to the sequence's
length, which is read on the device: the work is balanced for any length, the launch never waits on the
host, and one launch serves every step of a CUDA graph over a static cache.

Called from Python on every token, the launcher's host time matters as much as the kernels' (a decode step at
a short cache runs for a few microseconds): the partials live in a reusable workspace (no allocation per call),
and a call whose signature was seen before replays that call's plan (see "the host path of a repeated call").
"""
import functools
import math

import torch
import triton
import triton.language as tl

from flashcore import _pdl, _validate
from flashcore._launch import FastLaunch, int_key, pointer_key
from flashcore._online_softmax import (LOG2E, accumulate, attend_block, finish, softmax_step,
                                       valid_key_range)
from flashcore._pdl import wait_for_previous_kernel
from flashcore.ops.rope_append import check_tables, rotate

DECODE_BLOCK_N = 64
# Issue each block's V load beside its K load (see attend_block)? A split holds one or two blocks at short caches,
# where it should help. Measured: on the H100 the kernel alone unchanged and the engine 0.1-0.4% faster, within the
# spread (dev_probe.py short); on the H200 the engine no faster (run28, dev_probe.py flags). Left off.
DECODE_LOAD_V_WITH_K = False
# The split that owns the new row's block (rope_decode_attention) folds that block in after its loop, outside the
# pipeliner: loading its V beside its K saves one memory round trip on that split's path, which every layer waits
# for (the merge needs every split). Measured (probe run35): the engine faster in 6 of 6 alternated pairs at 512-8K,
# by 5-40 us a step; outputs bitwise the same.
OWNER_LOAD_V_WITH_K = True
# The split kernel's launch on a GPU. Block sizes and split counts were swept (probe run16: none passes 83% of the
# copy rate at 32K); warps and pipeline stages were not. Nsight Compute (run35) has the kernel at 2 CTAs of 4 warps
# an SM, at 78% of DRAM peak at 32K, as cuDNN's. dev_probe.py part warps is their sweep.
DECODE_NUM_WARPS = 4
DECODE_NUM_STAGES = 3
MAX_SPLITS = 64
# Called from Python, a decode step at a short cache is bound by the host's time, not the device's: there the default
# is one split, which writes the output itself (one launch, no merge). Measured on the H200 at 512 (probe run31):
# 13 us a call against 17-20 with the heuristic's 8 splits and a merge (SDPA: 15-16), though the device takes
# 10.5 us against 5.6. So a call being captured in a CUDA graph, which pays only the device's time, keeps the
# heuristic; so does the 1K cache, where one split's 18 us on the device would be the call's time.
SINGLE_SPLIT_MAX_LEN = 512


def num_splits(batch, kv_heads, max_len, sm_count, block_n=DECODE_BLOCK_N):
    """How many programs share one (sequence, KV head)'s keys. Pure: a function of its arguments only.

    Aim for at most two whole waves of programs over the SMs (a partial last wave runs alone: at batch 8 on the
    H200, 320 programs, 2.4 waves, took 42 us where 256 took 39), but give each split at least one key block and
    never more than MAX_SPLITS (the merge reads every split).
    """
    for name, value in (("batch", batch), ("kv_heads", kv_heads), ("max_len", max_len),
                        ("sm_count", sm_count), ("block_n", block_n)):
        _validate.check_positive_int(name, value)
    programs = batch * kv_heads
    wanted = 2 * sm_count // programs
    return max(1, min(wanted, math.ceil(max_len / block_n), MAX_SPLITS))


# Lengths, head and split counts and RoPE table sizes vary between calls and models: never specialised, so one
# compiled variant serves them all (FastLaunch's key covers the strides).
@triton.jit(do_not_specialize=["kv_heads", "kv_len", "num_splits", "max_positions"])
def _decode_split_kernel(
    Q, K, V, PartialOut, PartialLse, KvLens, KvStart, Cos, Sin, Out,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_table, stride_ob, stride_oh, stride_od,
    kv_heads, kv_len, num_splits, qk_scale_log2, max_positions,
    GROUP_SIZE: tl.constexpr, BLOCK_H: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KV_LENS: tl.constexpr, HAS_KV_START: tl.constexpr,
    DOT_PRECISION: tl.constexpr, LOAD_V_WITH_K: tl.constexpr, OWNER_LOAD_V_WITH_K: tl.constexpr,
    ROPE: tl.constexpr, USE_PDL: tl.constexpr,
):
    tl.static_assert(BLOCK_H >= GROUP_SIZE)
    tl.static_assert(HAS_KV_LENS or not ROPE)
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): nothing before it
    # torch.compile hands a Python float over as fp64; keep the softmax state in fp32 whatever the caller
    qk_scale_log2 = tl.cast(qk_scale_log2, tl.float32)
    split = tl.program_id(0)
    off_bh = tl.program_id(1)  # (sequence, KV head)
    off_b = off_bh // kv_heads
    off_hkv = off_bh % kv_heads

    kv_lo, kv_hi = valid_key_range(KvLens, KvStart, off_b, kv_len, HAS_KV_LENS, HAS_KV_START)

    offs_h = tl.arange(0, BLOCK_H)  # query heads of this KV group (padded up to a dot-friendly 16)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PADDED)
    mask_h = offs_h < GROUP_SIZE
    mask_d = offs_d < HEAD_DIM
    q_heads = off_hkv * GROUP_SIZE + offs_h

    q_row = Q + off_b.to(tl.int64) * stride_qb
    q_ptrs = q_row + q_heads[:, None].to(tl.int64) * stride_qh + offs_d[None, :] * stride_qd
    q_mask = mask_h[:, None] & mask_d[None, :]
    q = tl.load(q_ptrs, mask=q_mask, other=0.0)
    k_base = K + off_b.to(tl.int64) * stride_kb + off_hkv.to(tl.int64) * stride_kh
    v_base = V + off_b.to(tl.int64) * stride_vb + off_hkv.to(tl.int64) * stride_vh

    first_block = kv_lo // BLOCK_N
    loop_hi = kv_hi
    if ROPE:
        # Q is this step's QKV projection: rotate the queries, and the new key, which goes to row kv_lens - 1
        # along with its value (written by split 0; the split that owns that row's block uses the registers).
        new_row = tl.load(KvLens + off_b) - 1
        position = new_row
        if HAS_KV_START:
            position = new_row - tl.load(KvStart + off_b)
        position = tl.minimum(tl.maximum(position, 0), max_positions - 1)  # left padding is never attended
        half = HEAD_DIM // 2
        first_half = offs_d < half
        partner_d = tl.where(first_half, offs_d + half, offs_d - half)
        table = position.to(tl.int64) * stride_table + offs_d % half
        cos = tl.load(Cos + table, mask=mask_d, other=0.0).to(tl.float32)
        sin = tl.load(Sin + table, mask=mask_d, other=0.0).to(tl.float32)
        q_partner = tl.load(q_row + q_heads[:, None].to(tl.int64) * stride_qh + partner_d[None, :] * stride_qd,
                            mask=q_mask, other=0.0)
        q = rotate(q, q_partner, cos[None, :], sin[None, :], first_half[None, :])
        k_src = q_row + (kv_heads * GROUP_SIZE + off_hkv).to(tl.int64) * stride_qh
        v_src = k_src + kv_heads * stride_qh
        k_new = rotate(tl.load(k_src + offs_d * stride_qd, mask=mask_d, other=0.0),
                       tl.load(k_src + partner_d * stride_qd, mask=mask_d, other=0.0), cos, sin, first_half)
        v_new = tl.load(v_src + offs_d * stride_qd, mask=mask_d, other=0.0)
        in_cache = (new_row >= 0) & (new_row < kv_len)  # whatever kv_lens holds, nothing is written outside
        new_row_ok = mask_d & in_cache & (split == 0)
        tl.store(k_base + new_row.to(tl.int64) * stride_kn + offs_d * stride_kd, k_new, mask=new_row_ok)
        tl.store(v_base + new_row.to(tl.int64) * stride_vn + offs_d * stride_vd, v_new, mask=new_row_ok)
        new_block = new_row // BLOCK_N
        loop_hi = tl.where(in_cache, tl.minimum(kv_hi, new_block * BLOCK_N), kv_hi)

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM_PADDED], dtype=tl.float32)

    for start_n in range((first_block + split) * BLOCK_N, loop_hi, num_splits * BLOCK_N):
        cols = start_n + offs_n
        col_ok = (cols >= kv_lo) & (cols < kv_hi)
        m_i, l_i, acc = attend_block(
            q, m_i, l_i, acc,
            k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd, col_ok[None, :] & mask_d[:, None],
            v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd, col_ok[:, None] & mask_d[None, :],
            col_ok[None, :], qk_scale_log2, DOT_PRECISION, LOAD_V_WITH_K, MASKED=True)

    if ROPE:
        # The new row's block, last in its split's round-robin order as in the loop, with the new key and value
        # taken from registers: the cache row may not be written yet, and what a load finds there is replaced.
        start_n = new_block * BLOCK_N
        owner = in_cache & (start_n < kv_hi) & (new_block >= first_block + split) \
            & ((new_block - first_block - split) % num_splits == 0)
        if owner:
            cols = start_n + offs_n
            col_ok = (cols >= kv_lo) & (cols < kv_hi)
            is_new = cols == new_row
            kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                         mask=col_ok[None, :] & mask_d[:, None], other=0.0)
            v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
            v_mask = col_ok[:, None] & mask_d[None, :]
            if OWNER_LOAD_V_WITH_K:
                v = tl.load(v_ptrs, mask=v_mask, other=0.0)
            kt = tl.where(is_new[None, :], k_new[:, None], kt)
            m_i, l_i, p, alpha = softmax_step(q, m_i, l_i, kt, col_ok[None, :], qk_scale_log2, DOT_PRECISION,
                                              MASKED=True)
            if not OWNER_LOAD_V_WITH_K:
                v = tl.load(v_ptrs, mask=v_mask, other=0.0)
            v = tl.where(is_new[:, None], v_new[None, :], v)
            acc = accumulate(acc, alpha, p, v, DOT_PRECISION)

    # Partial result, normalised within the split; a split with no keys writes zeros and lse -inf.
    out, lse_log2 = finish(m_i, l_i, acc)
    if num_splits == 1:
        # The only split holds the whole result: it goes straight to Out, and no merge kernel runs. Bitwise what
        # the merge of one split gives (its weight is exp2(0) = 1). A branch at run time, not a constexpr: one
        # compiled kernel serves both, so a graph captured after calls with another split count compiles nothing.
        o_ptrs = Out + off_b.to(tl.int64) * stride_ob + q_heads[:, None].to(tl.int64) * stride_oh \
            + offs_d[None, :] * stride_od
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=q_mask)
    else:
        row = (off_b * kv_heads * GROUP_SIZE + q_heads).to(tl.int64) * num_splits + split  # [B, Hq, splits] order
        tl.store(PartialOut + row[:, None] * HEAD_DIM_PADDED + offs_d[None, :], out, mask=mask_h[:, None])
        tl.store(PartialLse + row, lse_log2, mask=mask_h)


@triton.jit(do_not_specialize=["q_heads", "num_splits"])
def _decode_merge_kernel(
    PartialOut, PartialLse, Out,
    stride_ob, stride_oh, stride_od,
    q_heads, num_splits,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PADDED: tl.constexpr, SPLITS_PADDED: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): nothing before it
    off_bh = tl.program_id(0)
    off_b = off_bh // q_heads
    off_h = off_bh % q_heads
    offs_s = tl.arange(0, SPLITS_PADDED)
    offs_d = tl.arange(0, HEAD_DIM_PADDED)
    mask_s = offs_s < num_splits
    rows = off_bh.to(tl.int64) * num_splits + offs_s
    lse = tl.load(PartialLse + rows, mask=mask_s, other=float("-inf"))
    parts = tl.load(PartialOut + rows[:, None] * HEAD_DIM_PADDED + offs_d[None, :], mask=mask_s[:, None], other=0.0)
    # log-sum-exp merge: weight each split's normalised output by exp2(lse_s - max)
    m = tl.max(lse, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    w = tl.math.exp2(lse - m_safe)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total > 0.0, total, 1.0)
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh + offs_d * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)


_split_launch = FastLaunch(_decode_split_kernel)
_merge_launch = FastLaunch(_decode_merge_kernel)


class DecodeWorkspace:
    """Scratch memory of split-K decode, reused across calls so that a call (or a captured CUDA graph)
    allocates nothing: partial outputs and log-sum-exps for ``rows`` (sequence, query head) pairs times
    ``max_splits``. One workspace must not serve two launches that run at the same time."""

    def __init__(self, rows, head_dim, max_splits=MAX_SPLITS, device=None):
        self.partial_out = torch.empty(rows * max_splits, triton.next_power_of_2(head_dim), dtype=torch.float32,
                                       device=device)
        self.partial_lse = torch.empty(rows * max_splits, dtype=torch.float32, device=device)

    @classmethod
    def for_shape(cls, batch, q_heads, head_dim, max_splits=MAX_SPLITS, device=None):
        return cls(batch * q_heads, head_dim, max_splits, device)

    def fits(self, rows, head_dim_padded, splits):
        return self.partial_out.shape[1] == head_dim_padded and rows * splits <= self.partial_lse.shape[0]


# Default workspaces, one per device (launches on a device run in stream order, so they can share it), grown
# on demand. A grown-out workspace is kept alive (not freed): a CUDA graph captured earlier may still use it.
_WORKSPACES = {}
_RETIRED_WORKSPACES = []


def _default_workspace(device, rows, head_dim_padded, splits):
    workspace = _WORKSPACES.get(device)
    if workspace is None or not workspace.fits(rows, head_dim_padded, splits):
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("decode_attention needs a larger workspace while a CUDA graph is being captured: "
                               "call it once with these shapes before capturing, or pass workspace=")
        if workspace is not None:
            _RETIRED_WORKSPACES.append(workspace)
        grown_rows = max(rows, workspace.partial_lse.shape[0] // MAX_SPLITS if workspace else 0)
        workspace = _WORKSPACES[device] = DecodeWorkspace(grown_rows, head_dim_padded, MAX_SPLITS, device)
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


@functools.lru_cache(maxsize=256)
def _splits_for(batch, kv_heads, kv_len, device):
    return num_splits(max(batch, 1), kv_heads, kv_len, sm_count(device))


def default_splits(batch, kv_heads, kv_len, device):
    """The split count decode_attention uses when the caller names none: one split for a short cache called from
    Python on CUDA (see SINGLE_SPLIT_MAX_LEN), otherwise num_splits' heuristic."""
    if kv_len <= SINGLE_SPLIT_MAX_LEN and device.type == "cuda" and not torch.cuda.is_current_stream_capturing():
        return 1
    return _splits_for(batch, kv_heads, kv_len, device)


def decode_attention(query, key, value, *, kv_lens=None, kv_start=None, scale=None, splits=None, out=None,
                     workspace=None):
    """One decode step: query [B, Hq, 1, D] over a cache key/value [B, Hkv, Skv, D] (Skv may be capacity).

    kv_lens: optional int32 [B] on the query's device, valid cache rows per sequence (default Skv; clamped to
        Skv). kv_start: optional int32 [B], first valid row (left padding). Neither is read on the host, so
        the call can be captured in a CUDA graph. The query attends every valid key (it is the newest token).
    splits: number of split-K programs per (sequence, KV head); default num_splits(B, Hkv, Skv, SM count), or one
        for a cache of at most SINGLE_SPLIT_MAX_LEN rows called outside CUDA-graph capture (default_splits).
    out: optional [B, Hq, 1, D] output. workspace: a DecodeWorkspace for the split partials (default: one
        kept per device, grown when needed); pass your own to capture a first call in a CUDA graph.
    Returns out [B, Hq, 1, D] (laid out [B, 1, Hq, D] in memory). A sequence with no valid key gives zeros.
    """
    return _decode(query, key, value, kv_lens, kv_start, scale, splits, out, workspace, rope=None)


def rope_decode_attention(qkv, cos, sin, key, value, *, kv_lens, kv_start=None, scale=None, splits=None, out=None,
                          workspace=None):
    """`rope_append` of one new token per sequence and `decode_attention` in one launch (the engine's decode
    step): qkv [B, (Hq + 2·Hkv)·D] is this step's QKV projection. Its queries and key are rotated at position
    kv_lens[b] - 1 - kv_start[b] with the cos, sin tables of `rope_append.rope_tables`; the rotated key and the
    value are written to cache row kv_lens[b] - 1 (no row outside the cache is written), and the queries attend
    every valid row, that one included. kv_lens is required. Other arguments as in decode_attention; returns out
    [B, Hq, 1, D], bitwise what rope_append followed by decode_attention gives."""
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 2:
        raise ValueError(f"qkv must be a tensor of rank 2 [B, (Hq + 2*Hkv)*D], got "
                         f"{getattr(qkv, 'shape', type(qkv).__name__)}")
    _validate.check_tensor("key", key)
    if kv_lens is None:
        raise ValueError("kv_lens is required: the new token goes to row kv_lens - 1")
    batch, width = qkv.shape
    kv_heads, head_dim = key.shape[1], key.shape[3]
    _validate.check_head_dim("head_dim", head_dim)
    if head_dim % 2 or width % head_dim or width // head_dim <= 2 * kv_heads:
        raise ValueError(f"qkv width {width} must be (Hq + 2*Hkv) * D with Hkv={kv_heads}, Hq >= 1 and an even "
                         f"D={head_dim} (from key {tuple(key.shape)})")
    check_tables(cos, sin, head_dim)
    for name, t in (("qkv", qkv), ("cos", cos), ("sin", sin)):
        _validate.check_same(name, t, "key", key)
        _validate.check_contiguous_last_dim(name, t)
    q_heads = width // head_dim - 2 * kv_heads
    query = qkv[:, :q_heads * head_dim].view(batch, q_heads, 1, head_dim)
    return _decode(query, key, value, kv_lens, kv_start, scale, splits, out, workspace, rope=(cos, sin))


def _decode(query, key, value, kv_lens, kv_start, scale, splits, out, workspace, rope):
    signature = None
    if rope is None and workspace is None:
        signature = _plan_signature(query, key, value, kv_lens, kv_start, scale, splits, out)
        plan = None if signature is None else _PLANS.get(signature)
        if plan is not None:
            result = plan.run(query, key, value, kv_lens, kv_start, out)
            if result is not None:
                return result
    batch, q_heads, kv_heads, q_len, kv_len, head_dim = _validate.check_attention_call(query, key, value, kv_lens,
                                                                                       kv_start)
    if q_len != 1:
        raise ValueError(f"decode_attention takes one query row per head (query seq length 1), got {q_len}")
    scale = head_dim ** -0.5 if scale is None else _validate.check_scale(scale, head_dim)
    if splits is None:
        splits = default_splits(batch, kv_heads, kv_len, query.device)
    else:
        splits = _validate.check_int("splits", splits, minimum=1, maximum=MAX_SPLITS)
    if out is None:
        out = torch.empty(batch, 1, q_heads, head_dim, dtype=query.dtype, device=query.device).transpose(1, 2)
    else:
        _validate.check_out(out, query.shape, query.dtype, query.device)
    if batch == 0:
        return out

    head_dim_padded = triton.next_power_of_2(head_dim)
    if workspace is None:
        workspace = _default_workspace(query.device, batch * q_heads, head_dim_padded, splits)
    elif not isinstance(workspace, DecodeWorkspace):
        raise TypeError(f"workspace must be a flashcore.DecodeWorkspace, got {type(workspace).__name__}")
    elif not workspace.fits(batch * q_heads, head_dim_padded, splits):
        raise ValueError(f"workspace is too small for batch {batch}, {q_heads} query heads, head_dim {head_dim} "
                         f"and {splits} splits")
    elif workspace.partial_out.device != query.device:
        raise ValueError(f"workspace device {workspace.partial_out.device} does not match query device "
                         f"{query.device}")
    cos, sin = rope if rope is not None else (None, None)
    group = q_heads // kv_heads
    on_gpu = query.device.type == "cuda"
    single_split = splits == 1  # the split kernel writes the output itself, and no merge kernel runs
    out_strides = (out.stride(0), out.stride(1), out.stride(3))
    split_strides = (query.stride(0), query.stride(1), query.stride(3),
                     key.stride(0), key.stride(1), key.stride(2), key.stride(3),
                     value.stride(0), value.stride(1), value.stride(2), value.stride(3),
                     0 if cos is None else cos.stride(0), *out_strides)
    block_n, load_v_with_k, owner_v_with_k = DECODE_BLOCK_N, DECODE_LOAD_V_WITH_K, OWNER_LOAD_V_WITH_K
    num_warps, num_stages = DECODE_NUM_WARPS, (DECODE_NUM_STAGES if on_gpu else 1)
    # Released early (flashcore._pdl) up to _pdl.EARLY_MAX_BATCH, where the split kernel's programs all run at once
    # (two an SM at most, as the default split counts keep them); the merge follows.
    use_pdl = _pdl.mode(query.device, early=batch <= _pdl.EARLY_MAX_BATCH
                        and splits * batch * kv_heads <= 2 * sm_count(query.device))
    stride_key = int_key(split_strides)
    split_key = None if stride_key is None else (
        query.dtype, out.dtype, group, head_dim, block_n, load_v_with_k, owner_v_with_k, num_warps, num_stages,
        use_pdl,
        kv_lens is not None, kv_start is not None, rope is not None, stride_key,
        pointer_key(query), pointer_key(key), pointer_key(value), pointer_key(kv_lens), pointer_key(kv_start),
        pointer_key(cos), pointer_key(sin), pointer_key(out))
    split_ints = (*split_strides, kv_heads, kv_len, splits, scale * LOG2E, 1 if cos is None else cos.shape[0])
    _split_launch.launch(
        (splits, batch * kv_heads),
        (query, key, value, workspace.partial_out, workspace.partial_lse, kv_lens, kv_start, cos, sin, out,
         *split_ints),
        split_key,
        lambda: dict(GROUP_SIZE=group, BLOCK_H=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
                     HEAD_DIM_PADDED=head_dim_padded, BLOCK_N=block_n, HAS_KV_LENS=kv_lens is not None,
                     HAS_KV_START=kv_start is not None,
                     DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",  # tf32: unused for 16-bit
                     LOAD_V_WITH_K=load_v_with_k, OWNER_LOAD_V_WITH_K=owner_v_with_k, ROPE=rope is not None,
                     USE_PDL=use_pdl, num_warps=num_warps, num_stages=num_stages, launch_pdl=use_pdl > 0))
    merge_key = merge_ints = None
    if not single_split:
        out_stride_key = int_key(out_strides)
        splits_padded = triton.next_power_of_2(splits)
        merge_key = None if out_stride_key is None else (out.dtype, head_dim, splits_padded, out_stride_key,
                                                         pointer_key(out), use_pdl)
        merge_ints = (*out_strides, q_heads, splits)
        _merge_launch.launch(
            (batch * q_heads,),
            (workspace.partial_out, workspace.partial_lse, out, *merge_ints), merge_key,
            lambda: dict(HEAD_DIM=head_dim, HEAD_DIM_PADDED=head_dim_padded, SPLITS_PADDED=splits_padded,
                         USE_PDL=use_pdl, num_warps=4, launch_pdl=use_pdl > 0))
    if signature is not None and _aligned(query, key, value, kv_lens, kv_start, out):
        device_index = query.device.index
        split = _split_launch.bound(split_key, device_index, (splits, batch * kv_heads))
        merge = None if single_split else _merge_launch.bound(merge_key, device_index, (batch * q_heads,))
        if split is not None and (single_split or merge is not None):
            if len(_PLANS) >= MAX_PLANS:
                _PLANS.clear()
            _PLANS[signature] = _DecodePlan(split, merge, workspace, (batch, q_heads, 1, head_dim),
                                            split_ints, merge_ints)
    return out


# ------------------------------------------------------------------ the host path of a repeated call
# From Python (the Hugging Face drop-in path) a decode call's host time is most of its time: a step at a short
# cache runs for a few microseconds on the device. So the first call of each signature (everything the checks,
# the split count, the launch keys and the integer arguments depend on) leaves a plan, and later calls with that
# signature only allocate the output and hand the pointers, as ints, to the two compiled kernels' C launchers.
# Only the common case gets plans: plain CUDA tensors, the default workspace and no RoPE (the engine's fused
# step runs in a CUDA graph, where the host path is paid once). A captured call at a short cache takes the full path:
# its default split count differs from the one a call from Python plans.
_PLANS = {}
MAX_PLANS = 1024


def _plan_signature(query, key, value, kv_lens, kv_start, scale, splits, out):
    """The key of a call's plan, or None when the call always takes the full path (an argument the checks would
    reject or that is not plain, a CPU tensor). Module settings the launch reads are part of it. Written out
    rather than looped: it runs on every call, and a generator or a helper per tensor costs a microsecond."""
    tensor = torch.Tensor
    if type(query) is not tensor or type(key) is not tensor or type(value) is not tensor \
            or not (kv_lens is None or type(kv_lens) is tensor) or not (kv_start is None or type(kv_start) is tensor) \
            or not (out is None or type(out) is tensor):
        return None
    device = query.device
    if not (scale is None or type(scale) in (float, int)) or not (splits is None or type(splits) is int) \
            or device.type != "cuda":
        return None
    if splits is None and key.shape[2] <= SINGLE_SPLIT_MAX_LEN and torch.cuda.is_current_stream_capturing():
        return None  # captured, a short cache takes the heuristic's splits (default_splits), not a plan's one split
    return (query.shape, query.stride(), query.dtype, device,
            key.shape, key.stride(), key.dtype, key.device,
            value.shape, value.stride(), value.dtype, value.device,
            None if kv_lens is None else (kv_lens.shape, kv_lens.stride(), kv_lens.dtype, kv_lens.device),
            None if kv_start is None else (kv_start.shape, kv_start.stride(), kv_start.dtype, kv_start.device),
            None if out is None else (out.shape, out.stride(), out.dtype, out.device),
            scale, splits, DECODE_BLOCK_N, DECODE_LOAD_V_WITH_K, DECODE_NUM_WARPS, DECODE_NUM_STAGES,
            _pdl.ENABLED, _pdl.RELEASE_EARLY)


def _aligned(*tensors):
    """Every pointer 16-byte aligned (plans are made for that case only, the one Triton specialises for)."""
    return all(pointer_key(t) is not False for t in tensors)


class _DecodePlan:
    """The launches of one call signature, with everything but the pointers bound; merge is None where a single
    split writes the output itself."""
    __slots__ = ("split", "merge", "workspace", "partials", "out_shape", "out_strides", "split_ints", "merge_ints")

    def __init__(self, split, merge, workspace, out_shape, split_ints, merge_ints):
        self.split, self.merge = split, merge
        self.workspace = workspace  # keeps the partials' memory alive for as long as the plan
        self.partials = (workspace.partial_out.data_ptr(), workspace.partial_lse.data_ptr())
        _, q_heads, _, head_dim = out_shape
        self.out_shape = out_shape  # [B, Hq, 1, D] laid out [B, 1, Hq, D], as the full path allocates it
        self.out_strides = (q_heads * head_dim, head_dim, q_heads * head_dim, 1)
        self.split_ints, self.merge_ints = split_ints, merge_ints

    def run(self, query, key, value, kv_lens, kv_start, out):
        """Launch, and return out; or None (nothing launched) when the call needs the full path: a tensor that
        requires grad (the full path raises), a pointer not 16-byte aligned."""
        if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad
                                        or (out is not None and out.requires_grad)):
            return None
        q, k, v = query.data_ptr(), key.data_ptr(), value.data_ptr()
        lens = 0 if kv_lens is None else kv_lens.data_ptr()
        start = 0 if kv_start is None else kv_start.data_ptr()
        if (q | k | v | lens | start | (0 if out is None else out.data_ptr())) % 16:
            return None
        if self.merge is None:  # one launch, which writes the output
            if out is None:
                out = torch.empty_strided(self.out_shape, self.out_strides, dtype=query.dtype, device=query.device)
            self.split(q, k, v, *self.partials, lens, start, 0, 0, out.data_ptr(), *self.split_ints)
            return out
        self.split(q, k, v, *self.partials, lens, start, 0, 0, 0, *self.split_ints)  # (the kernel ignores Out)
        # The output is allocated while the split kernel runs, not before it starts (torch's allocator aligns
        # to far more than 16 bytes): the device waits only for the host time before the first launch.
        if out is None:
            out = torch.empty_strided(self.out_shape, self.out_strides, dtype=query.dtype, device=query.device)
        self.merge(*self.partials, out.data_ptr(), *self.merge_ints)
        return out
