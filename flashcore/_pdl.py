"""Programmatic dependent launch (PDL) for the decode step's kernels, on Hopper and newer GPUs.

A decode step is a chain of about 200 short kernels, and without PDL each one is launched only once the one before
it has finished and flushed its writes. Launched with PDL, a kernel is scheduled early and its programs wait
in-kernel (`wait_for_previous_kernel`) until the kernel before has finished and its writes are visible. The waits
make the results bitwise the same (tests/test_pdl.py). The kernels that launch this way: the GEMVs, RMSNorm, and
decode attention's split and merge kernels.

When is "early"? A kernel is scheduled once every program of the one before has released it or exited.
- Released as they exit (USE_PDL 1): the launch overlaps the previous kernel's flush. Measured on the H200 against
  no PDL, alternated twice in each of two probe calls (run48, run49): the engine's step 31-38 us faster on average
  at 512-32K, 22-76 us at batch 1-32, the projection chain 22 us.
- Released right after the wait (USE_PDL 2, with RELEASE_EARLY): the next kernel's programs take SM slots as this
  kernel's programs leave them, and sit at their own wait, ready. That pays only where both kernels run in one wave
  (all programs at once): in the batch-1 and batch-2 steps, where every kernel but the lm_head's is persistent (the
  GEMVs), one wave (decode attention) or, at batch 2, a tiled GEMV launch that fits one held wave (the O and down
  projections). So kernels release early up to EARLY_MAX_BATCH, and past it only the tiled GEMV launches that fit in
  one held wave (below). Releasing the tiled O and down launches early, unheld, from the kernels before them cost
  the step 0.27 ms at batch 2 and 23-83 us at 4-32 (run52); in run51, where every kernel released early and none was
  held, the tiled 6144x4096 GEMV at M = 8 took 19.7-20.1 us against 16.5.
  A released kernel's programs go wherever an SM has room, so a persistent GEMV sized to two programs an SM would
  crowd up to four onto some SMs and leave others idle (run45: the projection chain 5.35 ms against 3.81). `hold`
  prevents that: each persistent GEMV asks for enough shared memory that no more than its programs per SM fit on
  one SM. Against releases at exit, alternated twice in each of two probe calls (run51, run52; 4.21-4.22 TB/s): the
  batch-1 engine step 17-72 us faster at 512-8K and 1-32 us at 32K, the projection chain 3.761-3.771 ms against
  3.788-3.796, and decode attention from Python 0.4-1.2 us faster at batch 1.
  The tiled GEMV (gemv.TILED_RELEASE_EARLY) releases early where its programs fit at once at up to three an SM,
  held to what it needs (every 8B shape but gate/up and lm_head). From 3 rows, alternated twice (run62, 4.11 TB/s):
  the batch 4 / 8 / 16 / 32 steps 50-69 / 40-82 / 65-85 / 13-51 us shorter, batch 1 and 2 tied, and 4096x4096 at
  M = 8 11.50-11.54 us against 11.79-11.96. At 2 rows alone it lost (run61: the batch-2 step 4.81 ms against 4.47),
  the launch after it there being the 2-row persistent kernel, then released at exit and not held. With every
  kernel of the batch-2 step released early and held (EARLY_MAX_BATCH 2), alternated twice (run64, 4.19 TB/s):
  batch 2 4.380-4.381 ms against 4.399-4.404, 4.354-4.358 with the tiled launches' weight prefetch
  (gemv.TILED_PREFETCH_MAX_ROWS); GEMV rows at M = 2 4096x4096 10.96 us against 11.78-11.83, 6144x4096 15.29-15.31
  against 15.81-16.05; batch 1 and 4-32 tied; bitwise the same.

Asking L2 for the first weight tiles or key/value blocks before the wait did not pay with releases at exit (run45-
run46: the engine step -20 to +35 us, the projection chain +60 us). Released early it does for the persistent
GEMVs, whose programs now sit at their wait while the kernel before them finishes: each asks for its first
PREFETCH_TILES weight tiles there (`prefetch_rows_l2`). Run53, alternated twice (4.16 TB/s): two tiles made the
batch-1 engine step 24-48 us faster at 512-32K, and the GEMV rows of notebook 04 faster at M = 1 (4096x4096 9.95 /
10.33 us against 11.16 / 10.71); four tiles lost 36-50 us a step and eight 0.2 ms. One tile against two, alternated
twice in each of two calls (run55, run56; 4.18-4.22 TB/s): the step faster in 14 of 16 pairs and within 1 us in
the other two (16-31 us faster at 512, up to 20 us at 2K-32K), 4096x4096 9.63-9.85 us against 9.87-10.24.
Decode's split kernel asking for its first key and value blocks lost (in a graph at 32K 39.4 us with two blocks
against 38.5; the engine 10-55 us slower at 2K-32K), and does not.
"""
import ctypes

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ENABLED = True
RELEASE_EARLY = True  # the one-wave kernels of small batches release the next kernel right after their wait
EARLY_MAX_BATCH = 2  # the batch up to which every one-wave kernel of the decode step releases early (see above)
# Released early (USE_PDL 2), a persistent GEMV asks L2 for this many of its first weight tiles while it sits at
# its wait (0: none); see the account above
PREFETCH_TILES = 1

_CAPABILITY = {}


def enabled(device):
    """Whether kernels on `device` launch with PDL: ENABLED, on a CUDA device of compute capability 9.0 or more.
    The interpreter has no PDL."""
    if not ENABLED or device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = _CAPABILITY.get(index)
    if capability is None:
        capability = _CAPABILITY[index] = torch.cuda.get_device_capability(index)
    return capability >= (9, 0)


def mode(device, early):
    """USE_PDL for a kernel on `device`: 0 without PDL; 2 under RELEASE_EARLY where the caller releases early
    (`early`: a launch of up to EARLY_MAX_BATCH rows, or a tiled GEMV that fits one held wave; see above), the
    kernel then held by `hold` (so never where the CUDA driver library cannot be opened to hold it); otherwise 1."""
    if not enabled(device):
        return 0
    return 2 if RELEASE_EARLY and early and _driver() is not None else 1


def launch_arguments(device, early=False):
    """The keyword arguments that launch a kernel taking USE_PDL on `device`, with PDL where it is on."""
    use_pdl = mode(device, early)
    return dict(USE_PDL=use_pdl, launch_pdl=use_pdl > 0)


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr):
    """Under PDL (USE_PDL 1 or 2, see `mode`): wait until the kernel before this one has finished and its writes are
    visible; at 2, then release the next kernel. Without PDL it compiles to nothing."""
    if USE_PDL:
        gdc_wait()
        if USE_PDL == 2:
            gdc_launch_dependents()


@triton.jit
def prefetch_rows_l2(base, rows, row_ok, stride_row, cols, COLS_PADDED: tl.constexpr):
    """Ask L2 for columns [0, cols) of the given rows of a row-major matrix at base (COLS_PADDED >= cols, a power of
    two), one 128-byte line at a time. A hint: it returns nothing, waits for nothing and never changes a result (L2
    is where the GPU's writes meet, so a line fetched early is still updated by a later write). Every address lies
    in the matrix: where row_ok is false, or past cols, it asks for the line at base."""
    LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth  # elements in 128 bytes
    LINES: tl.constexpr = (COLS_PADDED + LINE - 1) // LINE
    starts = tl.arange(0, LINES) * LINE
    ptrs = base + rows[:, None].to(tl.int64) * stride_row + starts[None, :]
    ptrs = tl.where(row_ok[:, None] & (starts < cols)[None, :], ptrs, base)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // $0 unused", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


# ------------------------------------------------------------------ holding a persistent kernel to its programs per SM
_HELD = {}  # compiled kernel -> the programs per SM it is held to
_SHARED_LIMITS = {}  # device index -> (shared memory per SM, per program at most, reserved per program), bytes
_DRIVER = []  # the CUDA driver library (ctypes), or None where it cannot be opened; filled on first use


def _driver():
    if not _DRIVER:
        try:
            _DRIVER.append(ctypes.CDLL("libcuda.so.1"))
        except OSError:
            _DRIVER.append(None)
    return _DRIVER[0]


def held_shared_bytes(programs_per_sm, own, per_sm, per_program_max, reserved):
    """The dynamic shared memory a program asks for so that at most `programs_per_sm` fit on one SM: just over a
    (programs_per_sm + 1)-th of the SM's (each program also takes `reserved` bytes), never less than its `own`."""
    if not isinstance(programs_per_sm, int) or programs_per_sm < 1:
        raise ValueError(f"programs_per_sm must be a positive int, got {programs_per_sm!r}")
    wanted = per_sm // (programs_per_sm + 1) - reserved + 1
    if wanted <= own:
        return own
    if wanted > per_program_max:
        raise ValueError(f"holding to {programs_per_sm} programs an SM needs {wanted} bytes of shared memory a "
                         f"program; at most {per_program_max} are allowed")
    return wanted


def hold(compiled, device, programs_per_sm):
    """Make later launches of `compiled` (a kernel that releases early, USE_PDL 2) fit at most
    `programs_per_sm` of its programs on one SM, through the shared memory they ask for; its code is unchanged.
    Call it after the launch that compiled the kernel (which ran unheld). None (the interpreter) is left alone."""
    if compiled is None or _HELD.get(compiled) == programs_per_sm:
        return
    driver = _driver()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SHARED_LIMITS:
        handle, value = ctypes.c_int(), ctypes.c_int()
        _check(driver.cuDeviceGet(ctypes.byref(handle), index), "cuDeviceGet")
        limits = []
        for attribute in (81, 97, 111):  # CU_DEVICE_ATTRIBUTE_: MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
            # MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, RESERVED_SHARED_MEMORY_PER_BLOCK
            _check(driver.cuDeviceGetAttribute(ctypes.byref(value), attribute, handle), "cuDeviceGetAttribute")
            limits.append(value.value)
        _SHARED_LIMITS[index] = tuple(limits)
    shared = held_shared_bytes(programs_per_sm, compiled.metadata.shared, *_SHARED_LIMITS[index])
    if shared > compiled.metadata.shared:
        # 8: CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES; Triton raises it only for kernels past 48 KB
        _check(driver.cuFuncSetAttribute(ctypes.c_void_p(compiled.function), 8, shared), "cuFuncSetAttribute")
    warps, ctas, _ = compiled.packed_metadata  # what Triton's launcher reads on every launch of this kernel
    compiled.packed_metadata = (warps, ctas, shared)
    _HELD[compiled] = programs_per_sm


def _check(status, call):
    if status != 0:
        raise RuntimeError(f"{call} failed with CUresult {status}")
