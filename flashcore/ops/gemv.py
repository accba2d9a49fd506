"""Weight-streaming GEMV / skinny GEMM for decode: y = x · Wᵀ with x [M, K] (M = batch, 1 to 32), W [N, K].

At decode time the weights are nearly all the bytes a step moves, so this kernel is built to stream W once at
full bandwidth: each program owns BLOCK_N output columns and walks the whole of K, so no split-K partials and
no reduce kernel exist. Small blocks of N give enough programs to fill every SM even for 4096-wide outputs.

Optional fusions remove the small kernels around each projection (each costs a launch and a ramp-up):
- ``norm_weight``: RMSNorm of x recomputed in the prologue (x is a few KB, read from L2), exactly as Hugging
  Face's LlamaRMSNorm rounds it: fp32 statistics, x·rstd rounded to x's dtype, times the weight, rounded again.
- ``residual``: y = residual + y, each rounded to the output dtype as ``residual + linear(x)`` would be.
- ``activation="silu_mul"``: W is [gate; up] stacked ([2N, K]); y = silu(x·gateᵀ) * (x·upᵀ), rounded as
  ``act_fn(gate_proj(x)) * up_proj(x)`` is.
Accumulation is fp32. One row, and fp32 inputs, reduce elementwise products; 16-bit inputs of 2 or more rows use
tl.dot (M padded to 16). 16-bit weights take fixed launch configs measured on an H200: one row (batch-1 decode, the
case the floor is about) goes through a persistent kernel (_gemv_row_kernel, which reads and normalises x once per
program) where all of K fits one block, and a persistent kernel that walks K in chunks otherwise (the down
projection; streaming_config where it has a norm or SiLU); two rows take the same persistent kernel but for very
wide weights (the lm_head) and a residual epilogue; batch_config serves the rest of 2 to 32 rows (an RMSNorm runs
first, as its own kernel; a launch that fits one held wave releases the next kernel early, TILED_RELEASE_EARLY);
the rest is autotuned per shape over a pruned list. The kernels are in _gemv_kernels.py; this module picks one for
each call and launches it.
"""
import torch
import triton
import triton.testing

from flashcore import _pdl, _validate
from flashcore.decode import sm_count
from flashcore.ops._gemv_kernels import (EPILOGUE_NONE, EPILOGUE_RESIDUAL, EPILOGUE_SILU_MUL, _gemv_chunked_row_kernel,
                                         _gemv_kernel, _gemv_row_kernel)
from flashcore.ops.rms_norm import rms_norm

MAX_ROWS = 32  # batch rows per call; the decode engine's largest batch


# The persistent one-row kernel (_gemv_row_kernel) serves 16-bit rows with K up to ROW_MAX_K (all but the down
# projection). Probes on the H200, graphs over rotated weights:
# - with an RMSNorm prologue (PERSISTENT_ROW; run25-26): QKV 6144x4096 16.4-17.3 us against streaming_config's
#   17.7-18.4, gate/up 58.9-59.2 against 60.3; the engine step at 2048 4.26-4.28 ms against 4.33.
# - 2-row tiles and 2 programs an SM (run36: tiles of 2-8 rows, 1-2 programs an SM, 3-5 stages): QKV 15.9 us
#   against 16.3 at 4 rows and one program; gate/up 60.5 against 61.0; the engine -30 to -39 us a step.
# - without a prologue (PERSISTENT_ROW_PLAIN; run36-37): bare 4096x4096 11.1 us against the tiled 12.2 (cuBLAS
#   14.3), 6144x4096 15.4 against 17.7 (17.7), 14336x4096 31.6 against 33.5 (32.7), 28672x4096 59.0 against 61.8
#   (62.2). The engine's O launch adds the residual: read where the epilogue used it, its L2 round trip stalled
#   every tile and the engine ran slower (+40-60 us a step); read a tile ahead, O takes 11.2 us against 12.3 and the
#   engine step 31-56 us less (run37).
PERSISTENT_ROW = True
PERSISTENT_ROW_PLAIN = True
ROW_MAX_K = 4096
ROW_BLOCK_N = 2
ROW_PROGRAMS_PER_SM = 2
ROW_STAGES = 3  # [gate; up] tiles need twice the shared memory a stage: 4-row tiles fit 4 stages, 8-row ones 2
# Up to ROWS_MAX 16-bit rows (batch decode) through the same kernel, in place of batch_config's tensor-core launch.
# Rows padded to a power of two -> (BLOCK_N, programs per SM, stages, warps). Probe run40 (H200, graphs over rotated
# weights, tiles of 1-2 rows, 1-2 programs an SM, 4-16 warps): at 2 rows it is ahead of the batch launch on every
# shape it timed (QKV with its norm 17.4 us against 18.9, gate/up with norm and SiLU 62.2 against 63.7, 1024x4096 6.3
# against 7.9, 6144x4096 16.1 against 16.3, cuBLAS 16.1; 28672x4096 a tie) and the engine's batch-2 step takes
# 4.55-4.56 ms against 4.61-4.63. At 4 rows it loses on 4 of 6 shapes and the engine's step by 0.2 ms; at 8 rows
# (x alone fills 128 registers a thread) it runs 2-2.5x slower. So 2 rows only. Notebook 04 at acff090 then had
# lm_head at 2 rows slower than batch_config had been (240.0 us against 235.1), a shape run40 never timed. Probe
# run41 (every shape at 2 rows, bare and fused) kept the row kernel ahead on the narrow shapes and the norm launches
# (1024x4096 6.3 us against 7.5, 6144x4096 16.6 against 16.8, QKV with its norm 17.4 against 19.1, gate/up with norm
# and SiLU 61.3-62.7 against 63.3) and put it behind in two places, which now take batch_config: weights of more than
# ROWS_MAX_WEIGHT_ROWS rows (lm_head 245.1-245.5 against 241.4-243.1, bare or with its norm) and a residual epilogue
# (O 13.4-13.7 against 12.1); the engine's batch-2 step then took 4.511-4.516 ms against 4.549-4.581 (run42).
# 14336x4096 and 28672x4096 bare were within a timing's spread either way (32.6 against 32.3, 60.2 against 61.3).
PERSISTENT_ROWS = True
ROWS_MAX = 2
ROWS_MAX_WEIGHT_ROWS = 32768  # [gate; up] counts both halves
ROWS_LAUNCH = {2: (2, 2, 3, 4)}


def row_launch(rows, weight_rows, k, sixteen_bit, has_norm, has_residual):
    """(M_PAD, BLOCK_N, programs per SM, stages, warps) of the persistent row kernel for a call, or None where the
    tiled kernel serves it."""
    if not sixteen_bit or k > ROW_MAX_K:
        return None
    if rows == 1 and (PERSISTENT_ROW if has_norm else PERSISTENT_ROW_PLAIN):
        return 1, ROW_BLOCK_N, ROW_PROGRAMS_PER_SM, ROW_STAGES, 4
    if 2 <= rows <= ROWS_MAX and PERSISTENT_ROWS and weight_rows <= ROWS_MAX_WEIGHT_ROWS and not has_residual:
        m_pad = triton.next_power_of_2(rows)
        return (m_pad, *ROWS_LAUNCH[m_pad])
    return None


# One 16-bit row with K past ROW_MAX_K (the down projection, K = 14336) and no norm or SiLU through the persistent
# chunked kernel (_gemv_chunked_row_kernel) in place of streaming_config's tiled launch (31.4-32.0 us, 87-91% of the
# copy rate in the last two reports). Probes run43-run44 (H200, graphs over rotated weights, 10 rounds in turns, two
# calls; tiles of 2-8 rows, 1024-2048-wide chunks, 1-2 programs an SM, 3-4 stages): the down projection bare 30.5 /
# 31.6 us at the setting below against the tiled 31.3 / 32.5 (cuBLAS 32.4 / 33.4), with its residual in place (the
# engine's launch) 31.5 / 32.1 against 31.7 / 32.5; 8 KB tiles (2x2048, 4x1024) and one program an SM lost everywhere
# (37-64 us). The engine, alternated twice in each call: 512 faster in three of four pairs and tied in the fourth
# (4.0666-4.0760 ms against 4.0685-4.0874), 2048 within each other's spread (4.1236-4.1438 against 4.1255-4.1462).
# 4/4 fp16 and bf16 cases within 2x F.linear's error. Probe run46 added 32 KB tiles (8x2048, 16x1024): 31.8-32.7 us
# bare against this setting's 31.8, 32.2-33.3 with the residual against 32.4 (the tiled launch 32.5 / 32.9); the
# engine under the grid's best by sum, (8, 1024, 2, 3, 4), tied with the tiled launch (4.211-4.259 ms against
# 4.201-4.259).
PERSISTENT_ROW_CHUNKED = True
ROW_CHUNKED_LAUNCH = (8, 1024, 2, 4, 4)  # BLOCK_N, BLOCK_K, programs per SM, stages, warps


def chunked_row_launch(rows, k, sixteen_bit, has_norm, has_activation):
    """(BLOCK_N, BLOCK_K, programs per SM, stages, warps) of the chunked row kernel for a call, or None where the
    tiled kernel serves it."""
    if PERSISTENT_ROW_CHUNKED and rows == 1 and sixteen_bit and k > ROW_MAX_K and not has_norm \
            and not has_activation:
        return ROW_CHUNKED_LAUNCH
    return None


MAX_SPLIT_K = 4
SPLIT_K_MAX_N = 16384  # wider outputs have programs enough without splitting K
MIN_BLOCK_N = 4


def _configs():
    configs = []
    for block_n in (4, 8, 16, 32, 64):
        for block_k in (64, 128, 256, 512, 1024):
            for split_k in (1, 2, 4):
                for num_warps in (4, 8):
                    configs.append(triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split_k},
                                                 num_warps=num_warps))
    return configs


def streaming_config(k, has_norm):
    """The launch config of one 16-bit row (batch-1 decode), fixed rather than autotuned. Every config of the 8B
    engine's five projections, timed on an H200 in CUDA graphs over rotated weights (.ci/gpu/gemv_sweep.py,
    probes run12-13), put the fastest at 32 KB weight tiles of 4 warps, with the longest row runs: all of K (up to
    4096) in one block where an RMSNorm prologue must read x (a single pass over it), 2048-wide blocks otherwise.
    The autotuner it replaces (single launches timed, blocks at most 1024 wide) picked configs 5-20% slower."""
    block_k = min(4096 if has_norm else 2048, triton.next_power_of_2(k))
    block_n = max(MIN_BLOCK_N, min(64, 16384 // block_k))
    return triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": 1}, num_warps=4)


# Launches of 2 to 32 16-bit rows with an RMSNorm prologue were autotuned (at batch_config's blocks the prologue ran
# 1.2-1.5x slower than the plain launch, probe run24), and the autotuner's picks moved between runs: at b1d651e every
# engine batch above 1 ran 1.5-3% slower than at 50ca5c3 with no change to its kernels. NORM_BEFORE_BATCH normalises
# x with ops.rms_norm first (one more small kernel; x is a few KB) and runs the plain batch_config launch. Probe run38
# (H200, graphs over rotated weights, 2-16 rows): QKV 19.3-20.5 us against the prologue's 22.3-23.4, gate/up 63.0-63.7
# against 64.5-65.8, lm_head 246-253 against 253-262; the engine at 2048, alternated twice, batch 4 / 8 / 16 / 32
# 4.74 / 5.04 / 5.59 / 6.71 ms against 4.83 / 5.15 / 5.74 / 7.36 (batch 1 unchanged, 4.23); 42/42 fused cases
# within 2x F.linear's error.
NORM_BEFORE_BATCH = True
BATCH_BLOCK_K = 128
BATCH_WAVES = 1.5  # programs per SM that batch_config aims for
# Pipeline stages of batch_config's launch: Triton's default 3, and 4 for 16-wide column blocks, whose 4 KB weight
# tiles leave too few bytes in flight at 3. Probe run41 (stages 3-5 at every batch_config block, 4 and 8 rows): the
# 1024x4096 launch (16-wide blocks) 6.8 us at 4 stages against 7.4 at 3 (cuBLAS 8.0-8.2); at 64-wide blocks 4 stages
# gained nothing (4096x4096, 6144x4096, 14336x4096 within a timing's spread) or lost (28672x4096 71.0-71.5 against
# 62.0-62.3).
BATCH_STAGES, BATCH_NARROW_STAGES = 3, 4

# batch_config's launches whose programs all fit at once at TILED_EARLY_MAX_PER_SM an SM (every 8B shape but gate/up
# and lm_head: 224-256 programs, 384 for 6144x4096) released right after their wait and held to the programs per SM
# they need (flashcore._pdl), as the one-row launches are: alone and cold (Nsight Compute, run59) M = 8 costs what
# M = 1 does, and the rest of M = 1's lead is its overlap with the launches around it. Probe run62 (dev_probe part
# tiledearly, on against off alternated twice): the batch 4 / 8 / 16 / 32 steps 50-69 / 40-82 / 65-85 / 13-51 us
# shorter, batch 1 and 2 tied; GEMV rows at M = 8 4096x4096 11.50-11.54 us against 11.79-11.96, 6144x4096 16.05-16.07
# against 16.48-16.56 (cuBLAS 16.13-16.30), 1024x4096 5.97 against 6.32-6.33; 20/20 shapes bitwise the same. Not at
# ROWS_MAX rows or fewer unless every kernel of that batch's step releases early (_pdl.EARLY_MAX_BATCH): the launch
# after one may be the persistent row kernel, unheld where it releases at exit, whose programs would crowd onto the
# SMs this one leaves (run61: the batch-2 step 4.81 ms against 4.47). Run51 lost with these launches released early
# but not held (6144x4096 at M = 8 19.7 us against 16.5).
TILED_RELEASE_EARLY = True
TILED_EARLY_MAX_PER_SM = 3
# Up to this many rows (0: none) such a launch asks L2 for its first _pdl.PREFETCH_TILES weight tiles at its wait, as
# the persistent ones do. Probe run64 (part early2, 4.19 TB/s, alternated twice): GEMV rows at M = 8 4096x4096
# 11.22-11.30 us against 11.52-11.76, 6144x4096 15.65-15.71 against 15.80-16.10, 1024x4096 5.70-5.76 against
# 6.00-6.05; the batch-2 step (with _pdl.EARLY_MAX_BATCH 2) 4.354-4.358 ms against 4.380-4.381 without it; batch 4-16
# within 1-25 us either way; batch 32 6.522-6.538 against 6.506-6.511, so not past 8 rows.
TILED_PREFETCH_MAX_ROWS = 8


def tiled_early_launch(rows, n, k, sixteen_bit, has_norm, sms):
    """(batch_config's config, the programs per SM it is held to) for a call whose tiled launch releases early, or
    None where it releases at exit or batch_config does not serve it (the cheap checks first: this runs per call)."""
    if not TILED_RELEASE_EARLY or _pdl.EARLY_MAX_BATCH < rows <= ROWS_MAX or not sixteen_bit or has_norm:
        return None
    config = batch_config(n, k, sms)
    per_sm = triton.cdiv(triton.cdiv(n, config.kwargs["BLOCK_N"]) * config.kwargs["SPLIT_K"], sms)
    return (config, per_sm) if per_sm <= TILED_EARLY_MAX_PER_SM else None


def batch_config(n, k, sms):
    """The launch config of 2 to 32 16-bit rows (tl.dot, rows padded to 16 or 32), fixed rather than autotuned.
    Every config the autotuner may pick, timed on an H200 at 2, 4 and 8 rows in CUDA graphs over rotated weights
    (.ci/gpu/dev_probe.py gemv_m, probe run21), put the fastest at BLOCK_K 128 and 4 warps for every 8B shape and
    row count, with about 1.5 waves of programs or more: 64-wide column blocks (narrower only where even a 4-way
    split of K leaves too few programs, as for the 1024-wide k/v outputs), and K split in 2 or 4 until the
    programs reach that (probe run23 timed it at 16 and 32 rows too: ahead of cuBLAS but for 6144x4096, 2-13%
    behind at every config tried). The autotuner's picks (single launches timed) moved between runs, up to 20%
    slower. An RMSNorm prologue does not suit these 128-wide blocks (1.2-1.5x slower than without it, probe run24):
    see NORM_BEFORE_BATCH. Stages: BATCH_STAGES, BATCH_NARROW_STAGES."""
    target = BATCH_WAVES * sms
    splits = [s for s in (1, 2, 4) if s == 1 or (n <= SPLIT_K_MAX_N and k >= s * BATCH_BLOCK_K * 2)]
    block_n = next((bn for bn in (64, 32) if triton.cdiv(n, bn) * splits[-1] >= target), 16)
    split_k = next((s for s in splits if triton.cdiv(n, block_n) * s >= target), splits[-1])
    return triton.Config({"BLOCK_N": block_n, "BLOCK_K": BATCH_BLOCK_K, "SPLIT_K": split_k}, num_warps=4,
                         num_stages=BATCH_NARROW_STAGES if block_n == 16 else BATCH_STAGES)


def fixed_config(n, k, one_row, sixteen_bit, has_norm, sms):
    """The launch config that replaces autotuning, or None where the autotuner picks: 16-bit weights take
    streaming_config for one row and batch_config for more rows without an RMSNorm prologue."""
    if not sixteen_bit:
        return None
    if one_row:
        return streaming_config(k, has_norm)
    return None if has_norm else batch_config(n, k, sms)


def _prune(configs, named_args, **kwargs):
    """Keep configs whose per-iteration tile fits in registers and that give at least one wave of programs
    (split-K only where N alone gives too few, and at most 16 waves of split programs); a fixed_config alone
    where there is one."""
    args = {**named_args, **kwargs}  # the launcher passes everything by keyword
    m_pad, n, k, use_dot = args["M_PAD"], args["N"], args["K"], args["USE_DOT"]
    sms = sm_count(args["X"].device)
    fixed = fixed_config(n, k, m_pad == 1, args["W"].element_size() == 2, args["HAS_NORM"], sms)
    if fixed is not None:
        return [fixed]
    kept = []
    for config in configs:
        block_n, block_k, split_k = config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"], config.kwargs["SPLIT_K"]
        if use_dot:  # tl.dot needs BLOCK_N >= 16; an [M_PAD, BLOCK_N] fp32 accumulator
            fits = block_n >= 16 and block_n * block_k <= 8192 * (config.num_warps // 4)
        else:  # the [M_PAD, BLOCK_N, BLOCK_K] product lives in registers
            fits = m_pad * block_n * block_k <= 8192 * (config.num_warps // 4)
        programs = triton.cdiv(n, block_n) * split_k
        useful_split = split_k == 1 or (n <= SPLIT_K_MAX_N and k >= split_k * block_k * 2 and programs <= sms * 16)
        if fits and useful_split and programs >= sms:
            kept.append(config)
    return kept or [triton.Config({"BLOCK_N": 16, "BLOCK_K": 128, "SPLIT_K": 1}, num_warps=4)]


_gemv_autotuned = triton.autotune(
    configs=_configs(), key=["N", "K", "M_PAD", "HAS_NORM", "EPILOGUE", "USE_DOT"],
    prune_configs_by={"early_config_prune": _prune},
    # 5 + 25 ms per config (the kernels run for microseconds), with do_bench's L2 flush between runs
    do_bench=lambda fn, quantiles: triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles),
    restore_value=["Out"],  # Out may alias Residual (an in-place residual add): every trial starts from it
)(_gemv_kernel)


class GemvWorkspace:
    """Split-K partial sums and one arrival counter per column block (zero between calls), for up to `rows`
    padded batch rows. Only outputs up to SPLIT_K_MAX_N wide ever split K, so that is all it holds. One
    workspace must not serve two launches running at once."""

    def __init__(self, rows, device=None):
        self.partials = torch.empty(MAX_SPLIT_K * 2 * rows * SPLIT_K_MAX_N, dtype=torch.float32, device=device)
        self.counters = torch.zeros(triton.cdiv(SPLIT_K_MAX_N, MIN_BLOCK_N), dtype=torch.int32, device=device)
        self.rows = rows


_WORKSPACES = {}
_RETIRED = []


def _default_workspace(device, rows):
    """The per-device workspace (launches on one device run in stream order, so they can share it), grown
    when a call needs more rows. Grown-out workspaces stay referenced: a captured CUDA graph may still use
    them."""
    workspace = _WORKSPACES.get(device)
    if workspace is None or workspace.rows < rows:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("gemv needs a larger workspace while a CUDA graph is being captured: call it once "
                               "with these shapes before capturing")
        if workspace is not None:
            _RETIRED.append(workspace)
        workspace = _WORKSPACES[device] = GemvWorkspace(rows, device)
    return workspace


def gemv(x, weight, *, out=None, norm_weight=None, eps=1e-5, residual=None, activation=None, workspace=None,
         config=None):
    """y = x · weightᵀ for decode-sized x [M, K] (1 <= M <= 32) and weight [N, K] (or [2N, K] for silu_mul).

    norm_weight [K]: apply RMSNorm (eps) to x first. residual [M, N]: return residual + y (may be ``out``
    itself, for an in-place residual stream). activation "silu_mul": weight holds [gate; up]; returns
    silu(x·gateᵀ) * (x·upᵀ), of shape [M, N]. out: optional [M, N] output (lets a CUDA graph allocate nothing).
    workspace: a GemvWorkspace(rows) for split-K partials (default: one per device, grown on demand; pass your
    own to capture the call in a CUDA graph before any other call has sized the default).
    config: (BLOCK_N, BLOCK_K, SPLIT_K) or (BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages) to force a launch
    configuration instead of the autotuned one (num_warps 4 and Triton's default stages when left out).
    weight, out and residual rows must be contiguous (stride 1 along the last dimension); x may be any view.
    """
    _validate.check_matrix("x", x, contiguous_rows=False)
    _validate.check_matrix("weight", weight)
    _validate.check_same("weight", weight, "x", x)
    rows, k = x.shape
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"x must have 1 to {MAX_ROWS} rows (a decode batch), got {rows}; use F.linear for more")
    if k == 0:
        raise ValueError("x must have at least one column (K = 0 leaves nothing to reduce)")
    if weight.shape[1] != k:
        raise ValueError(f"weight has {weight.shape[1]} columns but x has {k}")
    if activation not in (None, "silu_mul"):
        raise ValueError(f"activation must be None or 'silu_mul', got {activation!r}")
    n = weight.shape[0]
    if activation == "silu_mul":
        if residual is not None:
            raise ValueError("residual and activation='silu_mul' cannot be combined")
        if n % 2:
            raise ValueError(f"activation='silu_mul' needs weight rows [gate; up] (an even count), got {n}")
        n //= 2
    eps = _validate.check_eps(eps)
    if norm_weight is not None:
        _validate.check_vector("norm_weight", norm_weight, k)
        _validate.check_same("norm_weight", norm_weight, "x", x)
    if residual is not None:
        _validate.check_matrix("residual", residual, shape=(rows, n))
        _validate.check_same("residual", residual, "x", x)
    if out is None:
        out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    else:
        _validate.check_matrix("out", out, shape=(rows, n))
        _validate.check_same("out", out, "x", x)
    # Tensor cores for 2+ rows of 16-bit inputs (M padded to 16). fp32 keeps tl.sum's tree reductions, whose
    # rounding error stays near cuBLAS's (a dot accumulates K sequentially: about 5x the error at K = 4096).
    use_dot = rows >= 2 and x.dtype != torch.float32
    m_pad = max(16, triton.next_power_of_2(rows)) if use_dot else triton.next_power_of_2(rows)
    row = None if config is not None else row_launch(rows, weight.shape[0], k, x.element_size() == 2,
                                                     norm_weight is not None, residual is not None)
    if NORM_BEFORE_BATCH and use_dot and row is None and norm_weight is not None and config is None \
            and x.stride(1) == 1:
        x, norm_weight = rms_norm(x, norm_weight, eps), None  # rounded as the prologue rounds
    if workspace is None:
        workspace = _default_workspace(x.device, m_pad)
    elif not isinstance(workspace, GemvWorkspace):
        raise TypeError(f"workspace must be a GemvWorkspace, got {type(workspace).__name__}")
    elif workspace.rows < m_pad or workspace.partials.device != x.device:
        raise ValueError(f"workspace ({workspace.rows} rows on {workspace.partials.device}) does not fit "
                         f"{m_pad} rows on {x.device}")
    if n == 0:  # an empty output: nothing to launch (the launchers divide by the tile count)
        return out
    epilogue = EPILOGUE_SILU_MUL if activation else (EPILOGUE_RESIDUAL if residual is not None else EPILOGUE_NONE)
    args = dict(
        X=x, W=weight, Out=out, NormWeight=norm_weight, Residual=residual,
        Partials=workspace.partials, Counters=workspace.counters,
        M=rows, N=n, K=k,
        stride_xm=x.stride(0), stride_xk=x.stride(1), stride_wn=weight.stride(0), stride_om=out.stride(0),
        stride_rm=residual.stride(0) if residual is not None else 0,
        eps=eps, M_PAD=m_pad, HAS_NORM=norm_weight is not None, EPILOGUE=epilogue, USE_DOT=use_dot,
    )
    if row is not None:
        _launch_row(args, *row)
        return out
    chunked = None if config is not None else chunked_row_launch(rows, k, x.element_size() == 2,
                                                                 norm_weight is not None, activation is not None)
    if chunked is not None:
        _launch_chunked_row(args, *chunked)
        return out
    if config is None and x.device.type == "cuda":
        early = tiled_early_launch(rows, n, k, x.element_size() == 2, norm_weight is not None, sm_count(x.device))
        if early is not None:
            _launch_tiled_early(args, *early)
            return out
        _gemv_autotuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])](
            **args, **_pdl.launch_arguments(x.device))
        return out
    config = tuple(config or (64, 256, 1))  # the interpreter: one config keeps CPU tests fast
    if len(config) not in (3, 5):
        raise ValueError(f"config must be (BLOCK_N, BLOCK_K, SPLIT_K[, num_warps, num_stages]), got {config!r}")
    block_n, block_k, split_k = config[:3]
    launch = dict(num_warps=4) if len(config) == 3 else dict(num_warps=config[3], num_stages=config[4])
    if split_k not in (1, 2, 4) or block_n < MIN_BLOCK_N or (use_dot and block_n < 16) \
            or (split_k > 1 and n > SPLIT_K_MAX_N):
        raise ValueError(f"config {config!r}: SPLIT_K must be 1, 2 or 4 (1 for outputs wider than "
                         f"{SPLIT_K_MAX_N}) and BLOCK_N at least {16 if use_dot else MIN_BLOCK_N}")
    _gemv_kernel[(triton.cdiv(n, block_n), split_k)](**args, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
                                                    **launch, **_pdl.launch_arguments(x.device))
    return out


def _launch_row(args, m_pad, block_n, programs_per_sm, stages, num_warps):
    """_gemv_row_kernel over gemv's argument dict: at most programs_per_sm programs per SM, each taking every
    programs-th tile of block_n columns."""
    n, k, device = args["N"], args["K"], args["X"].device
    tiles = triton.cdiv(n, block_n)
    programs = min(tiles, programs_per_sm * sm_count(device))
    _launch_held(
        _gemv_row_kernel, (programs,), device, programs_per_sm, args["M"] <= _pdl.EARLY_MAX_BATCH, True,
        args["X"], args["W"], args["Out"], args["NormWeight"], args["Residual"],
        args["M"], n, k, args["stride_xm"], args["stride_xk"], args["stride_wn"], args["stride_om"],
        args["stride_rm"], args["eps"],
        M_PAD=m_pad, BLOCK_N=block_n, BLOCK_K=triton.next_power_of_2(k), HAS_NORM=args["HAS_NORM"],
        EPILOGUE=args["EPILOGUE"], STAGES=stages, num_warps=num_warps)


def _launch_chunked_row(args, block_n, block_k, programs_per_sm, stages, num_warps):
    """_gemv_chunked_row_kernel over gemv's argument dict: at most programs_per_sm programs per SM, and no more than
    the busiest program's tile count needs (1024 tiles on 264 program slots: 256 programs of 4 tiles, not 264 of
    which 232 take 4 and 32 take 3)."""
    n, k, device = args["N"], args["K"], args["X"].device
    tiles = triton.cdiv(n, block_n)
    programs = triton.cdiv(tiles, triton.cdiv(tiles, programs_per_sm * sm_count(device)))
    _launch_held(
        _gemv_chunked_row_kernel, (programs,), device, programs_per_sm, args["M"] <= _pdl.EARLY_MAX_BATCH, True,
        args["X"], args["W"], args["Out"], args["Residual"], n, k, args["stride_xk"], args["stride_wn"],
        BLOCK_N=block_n, BLOCK_K=block_k, CHUNKS=triton.cdiv(k, block_k), EPILOGUE=args["EPILOGUE"], STAGES=stages,
        num_warps=num_warps)


def _launch_tiled_early(args, config, programs_per_sm):
    """_gemv_kernel at a fixed config, releasing the next kernel right after its wait and held to programs_per_sm
    (TILED_RELEASE_EARLY), asking L2 for its first weight tiles at its wait up to TILED_PREFETCH_MAX_ROWS rows."""
    grid = (triton.cdiv(args["N"], config.kwargs["BLOCK_N"]), config.kwargs["SPLIT_K"])
    _launch_held(_gemv_kernel, grid, args["X"].device, programs_per_sm, True, args["M"] <= TILED_PREFETCH_MAX_ROWS,
                 **args, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def _launch_held(kernel, grid, device, programs_per_sm, early, prefetch, *args, **kwargs):
    """A GEMV kernel whose grid fits programs_per_sm an SM, with PDL: where `early` it releases the next kernel
    early (flashcore._pdl), asks L2 for its first weight tiles at its wait where `prefetch`, and is held to
    programs_per_sm."""
    pdl = _pdl.launch_arguments(device, early=early)
    tiles = _pdl.PREFETCH_TILES if prefetch and pdl["USE_PDL"] == 2 else 0
    compiled = kernel[grid](*args, PROGRAMS_PER_SM=programs_per_sm, PREFETCH_TILES=tiles, **kwargs, **pdl)
    if pdl["USE_PDL"] == 2:
        _pdl.hold(compiled, device, programs_per_sm)
