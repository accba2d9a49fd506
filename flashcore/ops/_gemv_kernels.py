"""The GEMV's Triton kernels; flashcore.ops.gemv chooses among them and launches them (see its docstring).

- _gemv_kernel: tiled, any row count; split-K with an in-kernel reduction; tl.dot for 16-bit rows past one.
- _gemv_row_kernel: persistent, a few rows (one or two as launched) with all of K in registers, x read and
  normalised once a program.
- _gemv_chunked_row_kernel: persistent, one row whose K is walked in chunks (the down projection).
The persistent kernels (and _gemv_kernel, released early under gemv.TILED_RELEASE_EARLY) take PROGRAMS_PER_SM, the
programs per SM they are launched at, unused in their code: each compiled variant then has one, which
flashcore._pdl.hold holds it to.
Epilogues: EPILOGUE_NONE, EPILOGUE_RESIDUAL (y = residual + y) and EPILOGUE_SILU_MUL (W holds [gate; up]), each
rounded as the unfused torch ops round.
"""
import triton
import triton.language as tl

from flashcore._pdl import prefetch_rows_l2, wait_for_previous_kernel
from flashcore.ops._precise import silu

EPILOGUE_NONE, EPILOGUE_RESIDUAL, EPILOGUE_SILU_MUL = 0, 1, 2


@triton.jit
def _epilogue_store(acc, acc_up, residual, Out, offs_m, offs_n, mask, stride_om, EPILOGUE: tl.constexpr):
    """Round and store y = acc (plus the loaded residual, or silu(acc) * acc_up), as the unfused torch ops round.
    `residual` is read only by the residual epilogue."""
    out_ty = Out.dtype.element_ty
    y = acc.to(out_ty)
    if EPILOGUE == 1:
        y = (y.to(tl.float32) + residual.to(tl.float32)).to(out_ty)
    if EPILOGUE == 2:
        gate = silu(y.to(tl.float32)).to(out_ty)
        y = (gate.to(tl.float32) * acc_up.to(out_ty).to(tl.float32)).to(out_ty)
    tl.store(Out + offs_m[:, None].to(tl.int64) * stride_om + offs_n[None, :], y, mask=mask)


@triton.jit
def _residual_tile(Residual, offs_m, offs_n, mask, stride_rm, EPILOGUE: tl.constexpr):
    """The residual rows of one output tile (zeros where the epilogue has none)."""
    residual = tl.zeros([offs_m.shape[0], offs_n.shape[0]], dtype=tl.float32)
    if EPILOGUE == 1:
        residual = tl.load(Residual + offs_m[:, None].to(tl.int64) * stride_rm + offs_n[None, :], mask=mask,
                           other=0.0).to(tl.float32)
    return residual


@triton.jit(do_not_specialize=["M"])
def _gemv_kernel(
    X, W, Out, NormWeight, Residual, Partials, Counters,
    M, N, K,
    stride_xm, stride_xk, stride_wn, stride_om, stride_rm,
    eps,
    M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    HAS_NORM: tl.constexpr, EPILOGUE: tl.constexpr, USE_DOT: tl.constexpr, USE_PDL: tl.constexpr = False,
    PROGRAMS_PER_SM: tl.constexpr = 0, PREFETCH_TILES: tl.constexpr = 0,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)  # which slice of K (split-K: small N still fills every SM)
    # this program's slice of K: whole BLOCK_K chunks, contiguous (long runs of each weight row)
    k_per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    if USE_PDL == 2 and PREFETCH_TILES > 0:  # weights, which no kernel writes: asked for before the wait
        _prefetch_first_chunks(W + tl.minimum(k_lo, K - 1), pid_n, N, k_hi - k_lo, stride_wn, BLOCK_N, BLOCK_K,
                               PREFETCH_TILES, EPILOGUE)
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): nothing before it
    offs_m = tl.arange(0, M_PAD)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = X + offs_m[:, None].to(tl.int64) * stride_xm
    w_rows = W + offs_n[:, None].to(tl.int64) * stride_wn
    up_rows = W + (offs_n + N)[:, None].to(tl.int64) * stride_wn  # silu_mul: the up half of [gate; up]

    if HAS_NORM:
        # RMSNorm statistics in fp32 over the whole row of x (a few KB: an L2 read per program)
        sum_sq = tl.zeros([M_PAD], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=mask_m[:, None] & (offs_k[None, :] < K),
                        other=0.0).to(tl.float32)
            sum_sq += tl.sum(x * x, 1)
        rstd = tl.math.rsqrt(sum_sq / K + eps)

    acc = tl.zeros([M_PAD, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([M_PAD, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_hi
        x = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if HAS_NORM:
            g = tl.load(NormWeight + offs_k, mask=mask_k, other=0.0)
            x_hat = (x.to(tl.float32) * rstd[:, None]).to(x.dtype)
            x = (x_hat.to(tl.float32) * g[None, :].to(tl.float32)).to(x.dtype)
        w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        if USE_DOT:
            acc += tl.dot(x, tl.trans(w))
        else:
            acc += tl.sum(x[:, None, :].to(tl.float32) * w[None, :, :].to(tl.float32), 2)
        if EPILOGUE == 2:
            w_up = tl.load(up_rows + offs_k[None, :], mask=mask_n[:, None] & mask_k[None, :], other=0.0)
            if USE_DOT:
                acc_up += tl.dot(x, tl.trans(w_up))
            else:
                acc_up += tl.sum(x[:, None, :].to(tl.float32) * w_up[None, :, :].to(tl.float32), 2)

    mask = mask_m[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        residual = _residual_tile(Residual, offs_m, offs_n, mask, stride_rm, EPILOGUE)
        _epilogue_store(acc, acc_up, residual, Out, offs_m, offs_n, mask, stride_om, EPILOGUE)
    else:
        # Partials [SPLIT_K, 2, M_PAD, N] fp32; the last slice of this column block to arrive sums them in a
        # fixed order (deterministic), applies the epilogue and re-arms the counter for the next call.
        tile = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        plane = M_PAD * N
        tl.store(Partials + (pid_k * 2) * plane + tile, acc, mask=mask)
        if EPILOGUE == 2:
            tl.store(Partials + (pid_k * 2 + 1) * plane + tile, acc_up, mask=mask)
        tl.debug_barrier()  # every thread's partial stores before the (acq_rel, gpu-scope) arrival
        arrived = tl.atomic_add(Counters + pid_n, 1)
        if arrived == SPLIT_K - 1:
            tl.store(Counters + pid_n, 0)
            acc = tl.zeros([M_PAD, BLOCK_N], dtype=tl.float32)
            acc_up = tl.zeros([M_PAD, BLOCK_N], dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):  # .cg: from L2, never a stale L1 line
                acc += tl.load(Partials + (s * 2) * plane + tile, mask=mask, other=0.0, cache_modifier=".cg")
                if EPILOGUE == 2:
                    acc_up += tl.load(Partials + (s * 2 + 1) * plane + tile, mask=mask, other=0.0,
                                      cache_modifier=".cg")
            residual = _residual_tile(Residual, offs_m, offs_n, mask, stride_rm, EPILOGUE)
            _epilogue_store(acc, acc_up, residual, Out, offs_m, offs_n, mask, stride_om, EPILOGUE)


@triton.jit
def _gemv_row_kernel(
    X, W, Out, NormWeight, Residual,
    M, N, K, stride_xm, stride_xk, stride_wn, stride_om, stride_rm, eps,
    M_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_NORM: tl.constexpr,
    EPILOGUE: tl.constexpr, STAGES: tl.constexpr,
    USE_PDL: tl.constexpr = False, PROGRAMS_PER_SM: tl.constexpr = 0, PREFETCH_TILES: tl.constexpr = 0,
):
    """A few rows, persistent: each program reads (and normalises) x once, keeps it in registers, and streams
    column tiles of W in a grid-stride loop, so the rows' fixed costs are paid per program, not per tile.
    BLOCK_K holds all of K. It rounds as _gemv_kernel does with elementwise products and all of K in one block (the
    order of the fp32 sums may differ). Released early (USE_PDL 2), it first asks L2 for its first PREFETCH_TILES
    weight tiles (BLOCK_N * PREFETCH_TILES a power of two)."""
    if USE_PDL == 2 and PREFETCH_TILES > 0:  # weights, which no kernel writes: asked for before the wait
        r = tl.arange(0, BLOCK_N * PREFETCH_TILES)
        rows = (tl.program_id(0) + (r // BLOCK_N) * tl.num_programs(0)) * BLOCK_N + r % BLOCK_N
        prefetch_rows_l2(W, rows, rows < N, stride_wn, K, BLOCK_K)
        if EPILOGUE == 2:
            prefetch_rows_l2(W, rows + N, rows < N, stride_wn, K, BLOCK_K)
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): no load or store before it
    offs_k = tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    offs_m = tl.arange(0, M_PAD)
    mask_m = offs_m < M
    if M_PAD == 1:  # one row as a vector: the layout the batch-1 launches were tuned with
        x = tl.load(X + offs_k * stride_xk, mask=mask_k, other=0.0)
        if HAS_NORM:
            x32 = x.to(tl.float32)
            rstd = tl.math.rsqrt(tl.sum(x32 * x32, 0) / K + eps)
            g = tl.load(NormWeight + offs_k, mask=mask_k, other=0.0)
            x = ((x32 * rstd).to(x.dtype).to(tl.float32) * g.to(tl.float32)).to(x.dtype)
        x32 = x.to(tl.float32)[None, :]
    else:
        x = tl.load(X + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if HAS_NORM:
            x32 = x.to(tl.float32)
            rstd = tl.math.rsqrt(tl.sum(x32 * x32, 1) / K + eps)
            g = tl.load(NormWeight + offs_k, mask=mask_k, other=0.0)
            x = ((x32 * rstd[:, None]).to(x.dtype).to(tl.float32) * g[None, :].to(tl.float32)).to(x.dtype)
        x32 = x.to(tl.float32)
    programs = tl.num_programs(0)
    # A residual is read one tile ahead: loaded where the epilogue uses it, its L2 round trip would stall every
    # tile of the loop (the weight tiles are pipelined, it is not)
    offs_first = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    residual_next = _residual_tile(Residual, offs_m, offs_first, mask_m[:, None] & (offs_first < N)[None, :],
                                   stride_rm, EPILOGUE)
    for tile in tl.range(tl.program_id(0), tl.cdiv(N, BLOCK_N), programs, num_stages=STAGES):
        offs_n = tile * BLOCK_N + tl.arange(0, BLOCK_N)
        residual = residual_next
        offs_next = offs_n + programs * BLOCK_N
        residual_next = _residual_tile(Residual, offs_m, offs_next, mask_m[:, None] & (offs_next < N)[None, :],
                                       stride_rm, EPILOGUE)
        mask_nk = (offs_n < N)[:, None] & mask_k[None, :]
        w = tl.load(W + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :], mask=mask_nk, other=0.0)
        acc = _tile_products(x32, w, M_PAD)
        acc_up = acc
        if EPILOGUE == 2:
            w_up = tl.load(W + (offs_n + N)[:, None].to(tl.int64) * stride_wn + offs_k[None, :], mask=mask_nk,
                           other=0.0)
            acc_up = _tile_products(x32, w_up, M_PAD)
        _epilogue_store(acc, acc_up, residual, Out, offs_m, offs_n, mask_m[:, None] & (offs_n < N)[None, :],
                        stride_om, EPILOGUE)


@triton.jit
def _gemv_chunked_row_kernel(
    X, W, Out, Residual, N, K, stride_xk, stride_wn,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, CHUNKS: tl.constexpr, EPILOGUE: tl.constexpr, STAGES: tl.constexpr,
    USE_PDL: tl.constexpr = False, PROGRAMS_PER_SM: tl.constexpr = 0, PREFETCH_TILES: tl.constexpr = 0,
):
    """One row whose K is too long to hold in registers (the down projection), persistent: each program takes every
    programs-th tile of BLOCK_N columns and walks its K in CHUNKS blocks of BLOCK_K. The (tile, chunk) pairs are one
    flat loop, so the weight loads stay pipelined across tile boundaries (a loop per tile would drain the pipeline at
    each one); x is re-read from L1/L2 each chunk. Residual or no epilogue; it rounds as _gemv_kernel does with
    elementwise products (the order of the fp32 sums may differ). Released early (USE_PDL 2), it first asks L2 for
    the first PREFETCH_TILES chunks of its first tile (a power of two)."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    if USE_PDL == 2 and PREFETCH_TILES > 0:  # weights, which no kernel writes: asked for before the wait
        _prefetch_first_chunks(W, pid, N, K, stride_wn, BLOCK_N, BLOCK_K, PREFETCH_TILES, EPILOGUE)
    wait_for_previous_kernel(USE_PDL)  # launched with PDL (flashcore._pdl): no load or store before it
    steps = tl.cdiv(tl.cdiv(N, BLOCK_N) - pid, programs) * CHUNKS
    offs_m = tl.arange(0, 1)
    acc = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    residual = tl.zeros([1, BLOCK_N], dtype=tl.float32)
    for step in tl.range(0, steps, num_stages=STAGES):
        chunk, offs_n, offs_k = _chunk_walk(pid, programs, step, CHUNKS, BLOCK_N, BLOCK_K)
        mask_n = offs_n < N
        mask_k = offs_k < K
        if EPILOGUE == 1:  # read at a tile's first chunk: CHUNKS - 1 steps ahead of its use
            loaded = tl.load(Residual + offs_n[None, :], mask=mask_n[None, :] & (chunk == 0), other=0.0)
            residual = tl.where(chunk == 0, loaded.to(tl.float32), residual)
        x = tl.load(X + offs_k * stride_xk, mask=mask_k, other=0.0).to(tl.float32)
        w = tl.load(W + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :],
                    mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        products = _tile_products(x[None, :], w, 1)
        acc = tl.where(chunk == 0, products, acc + products)
        _epilogue_store(acc, acc, residual, Out, offs_m, offs_n, mask_n[None, :] & (chunk == CHUNKS - 1), 0, EPILOGUE)


@triton.jit
def _chunk_walk(pid, programs, step, CHUNKS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Step `step` of a persistent program's flat (tile, chunk) loop over tiles pid, pid + programs, ...: the chunk,
    the tile's output columns and the chunk's columns of K."""
    chunk = step % CHUNKS
    offs_n = (pid + (step // CHUNKS) * programs) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = chunk * BLOCK_K + tl.arange(0, BLOCK_K)
    return chunk, offs_n, offs_k


@triton.jit
def _prefetch_first_chunks(W, pid, N, K, stride_wn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           PREFETCH_TILES: tl.constexpr, EPILOGUE: tl.constexpr):
    """Ask L2 for the first PREFETCH_TILES chunks (a power of two) of the weight rows of tile `pid` (and of their
    up halves, [gate; up], under SiLU·mul), of rows K long starting at W (a split-K slice: W offset, K its width;
    none where K <= 0)."""
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.minimum(K, PREFETCH_TILES * BLOCK_K)
    prefetch_rows_l2(W, rows, rows < N, stride_wn, cols, PREFETCH_TILES * BLOCK_K)
    if EPILOGUE == 2:
        prefetch_rows_l2(W, rows + N, rows < N, stride_wn, cols, PREFETCH_TILES * BLOCK_K)


@triton.jit
def _tile_products(x32, w, M_PAD: tl.constexpr):
    """[M_PAD, BLOCK_N] fp32 sums of x32 [M_PAD, K] (fp32) times w [BLOCK_N, K], elementwise then reduced."""
    if M_PAD == 1:
        return tl.sum(w.to(tl.float32) * x32, 1)[None, :]
    else:
        return tl.sum(x32[:, None, :] * w.to(tl.float32)[None, :, :], 2)
