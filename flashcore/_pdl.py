"""Programmatic dependent launch (PDL) for the decode step's kernels, on Hopper and newer GPUs.

A decode step is a chain of about 200 short kernels, and without PDL each one is launched only once the one before
it has finished and flushed its writes. Launched with PDL, a kernel is scheduled as soon as the previous kernel's
programs have exited, and its programs wait in-kernel (`wait_for_previous_kernel`) until that kernel's writes are
visible, so the launch overlaps the flush. The waits make the results bitwise the same (tests/test_pdl.py). The
kernels that launch this way: the GEMVs, RMSNorm, and decode attention's split and merge kernels. Measured on the
H200, off and on alternated twice in each of two probe calls (run48, run49): the engine's step 31-38 us faster on
average at 512-32K (all 16 pairs faster, by 9-67 us), 22-76 us at batch 1-32, the projection chain 22 us.

Two ways to overlap more were measured and lost. A kernel may release the next one early, right after its own wait
(griddepcontrol.launch_dependents): the next kernel's programs then take whatever an SM has free beside this one's,
so a persistent GEMV sized to two programs an SM runs up to four on some SMs and none on others (run45: the
projection chain 5.35 ms against 3.81; releasing from the decode split kernel alone, run46: the engine tied at 512
and 20-60 us slower at 2K-32K than releasing none). And a kernel may ask L2 for its first weight tiles or key/value
blocks before its wait (run45-run46): with the release at exit there is little time to fill, and the engine step
moved -20 to +35 us, the projection chain +60 us.

A kernel launched with PDL may start before the previous kernel's writes are visible, whichever way that kernel was
launched: it waits before it reads or writes anything.
"""
import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

ENABLED = True
# Release the next kernel right after this one's wait (True) instead of as this one's programs exit (False). Off:
# see above; probe part `cap` measures it with each persistent GEMV held to its programs per SM.
RELEASE_EARLY = False

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


def mode(device):
    """USE_PDL for a kernel on `device`: 0 without PDL, 1 with it (the next kernel released as this one's programs
    exit), 2 with it and RELEASE_EARLY."""
    if not enabled(device):
        return 0
    return 2 if RELEASE_EARLY else 1


def launch_arguments(device):
    """The keyword arguments that launch a kernel taking USE_PDL on `device`, with PDL where it is on."""
    use_pdl = mode(device)
    return dict(USE_PDL=use_pdl, launch_pdl=use_pdl > 0)


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr):
    """Under PDL (USE_PDL 1 or 2, see `mode`): wait until the kernel before this one has finished and its writes are
    visible; at 2, then release the next kernel. Without PDL it compiles to nothing."""
    if USE_PDL:
        gdc_wait()
        if USE_PDL == 2:
            gdc_launch_dependents()
