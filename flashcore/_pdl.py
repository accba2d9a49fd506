"""Programmatic dependent launch (PDL) for the decode step's kernels, on Hopper and newer GPUs.

A decode step is a chain of short kernels, and each one starts cold: its first weight loads go out only once the
kernel before it has finished, so DRAM idles for a memory latency at every boundary (about 200 a step). Under PDL
a kernel may be scheduled while the one before it still runs. It then asks L2 for bytes that no earlier kernel
writes (its first weight tiles, its first key/value blocks) and waits (`wait_for_previous_kernel`) before it reads
or writes anything else, so its first loads after the wait find those bytes in L2 or already on their way.

A kernel launched with PDL must keep to that: before the wait, only prefetches (hints, which never change a
result) and loads of int32 tensors (kv_lens, kv_start: no kernel launched with PDL writes an int32 tensor, and a
kernel launched without it has finished before the next one starts). The kernel released next is scheduled once
every program of this one has passed its wait (RELEASE_EARLY) or exited, so at most two kernels overlap.
"""
import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ENABLED = False
# Whether a kernel releases the next one as soon as it has passed its wait (True), or only as its programs exit.
# Released early, the next kernel's programs take whatever an SM has free beside this one's, unevenly: a persistent
# GEMV sized to two programs an SM then runs up to four on some SMs and none on others (probe run45: the projection
# chain 5.35 ms against 3.81 with every kernel releasing early). So only kernels followed by a non-persistent one may.
RELEASE_EARLY = {"gemv": False, "decode_split": True, "decode_merge": False}
# What each kernel asks L2 for before its wait: the row GEMV its first tiles (a power of two), the chunked row GEMV
# the first columns of its first tile, decode's split kernel its first key and value blocks (a power of two).
PREFETCH_ROW_TILES = 1
PREFETCH_CHUNK_COLUMNS = 2048
PREFETCH_KV_BLOCKS = 1

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


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr, RELEASE: tl.constexpr):
    """Under PDL: wait until the kernel before this one has finished and its writes are visible; then, with RELEASE,
    let the next kernel be scheduled. Without PDL it compiles to nothing."""
    if USE_PDL:
        gdc_wait()
        if RELEASE:
            gdc_launch_dependents()


@triton.jit
def prefetch_l2(ptrs, mask, fallback):
    """Ask L2 for the 128-byte lines at ptrs where mask holds (fallback, a valid address, elsewhere). A hint:
    nothing is returned and nothing waits for it."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; // dummy $0", "=r,l", [tl.where(mask, ptrs, fallback)],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def prefetch_rows_l2(base, rows, row_ok, stride_row, stride_col, cols, COLS_PADDED: tl.constexpr):
    """Ask L2 for columns [0, cols) of the given rows of a matrix at base (COLS_PADDED >= cols, a power of two)."""
    LINE: tl.constexpr = 1024 // base.dtype.element_ty.primitive_bitwidth  # elements in 128 bytes
    LINES: tl.constexpr = (COLS_PADDED + LINE - 1) // LINE
    starts = tl.arange(0, LINES) * LINE
    ptrs = base + rows[:, None].to(tl.int64) * stride_row + starts[None, :] * stride_col
    prefetch_l2(ptrs, row_ok[:, None] & (starts < cols)[None, :], base)
