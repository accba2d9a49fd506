"""A low-overhead launch path for Triton kernels called on every decode step from Python.

Triton's ``kernel[grid](**kwargs)`` binds the arguments, specialises every one of them (pointer alignment, ints
equal to 1 or divisible by 16, 32- or 64-bit ints) and looks the result up in its cache on every call: tens of
microseconds of host time, more than a decode kernel runs on the device. ``FastLaunch`` lets the first call of
each variant go through Triton (which compiles it) and afterwards hands the arguments straight to the compiled
kernel's C launcher.

The caller names the variant with ``key``, and the key must determine everything Triton would specialise on.
Kernels launched this way list in ``do_not_specialize`` the ints that vary freely (lengths, counts), so those are
never specialised; the other ints (strides) enter the key through ``int_key``, which reproduces Triton's
specialisation of them (value 1, divisibility by 16). What remains is each pointer's dtype and 16-byte alignment,
and the constexprs, which the key must include too.

``bound`` goes one step further for a caller that keeps its own cache of checked calls (decode's plans): the
compiled variant at a fixed grid, called with the runtime arguments alone (``BoundLaunch``).
"""
from triton.runtime import driver


class FastLaunch:
    """Wraps one @triton.jit kernel whose runtime parameters come first and constexpr parameters last."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.arg_names = kernel.arg_names
        self.compiled = {}

    def launch(self, grid, args, key, constexprs):
        """args: every runtime argument, positionally, in signature order. key: hashable, determining the
        pointer dtypes and alignments and the constexprs, or None to take Triton's own path this time (an int
        beyond 32 bits, see int_key). constexprs(): a dict of the constexpr arguments by name (num_warps and
        num_stages too), called only the first time a key is seen."""
        device = args[0].device.index
        entry = None if key is None else self.compiled.get((key, device))
        if entry is None:  # first call of this variant: Triton's own path compiles and launches it
            named = constexprs()
            compiled = self.kernel[grid](**dict(zip(self.arg_names, args)), **named)
            if compiled is not None and key is not None:  # None under the interpreter: nothing to reuse
                # the C launcher takes every signature argument, constexprs included, in signature order
                tail = tuple(named[name] for name in self.arg_names[len(args):])
                self.compiled[(key, device)] = (compiled, tail)
            return
        compiled, tail = entry
        grid = tuple(grid) + (1,) * (3 - len(grid))
        compiled.run(grid[0], grid[1], grid[2], driver.active.get_current_stream(device), compiled.function,
                     compiled.packed_metadata, None, None, None, *args, *tail)

    def bound(self, key, device, grid):
        """The variant that `launch` compiled for (key, device) as a BoundLaunch at this grid, or None when there
        is none to reuse (not launched yet, or under the interpreter)."""
        entry = None if key is None else self.compiled.get((key, device))
        if entry is None:
            return None
        compiled, tail = entry
        runner = compiled.run
        if runner.global_scratch_size or runner.profile_scratch_size:  # scratch is allocated per launch
            return None
        return BoundLaunch(compiled, tail, grid, device)


class BoundLaunch:
    """One compiled variant at a fixed grid, called with the runtime arguments only: the cheapest launch Triton's
    C launcher allows. Pointers may be passed as ints (``t.data_ptr()``), which spares the launcher a driver
    query per tensor; the caller vouches that they point into live tensors on this device."""
    __slots__ = ("_c_launch", "_grid", "_function", "_flags", "_metadata", "_tail", "_device", "_stream_of")

    def __init__(self, compiled, tail, grid, device):
        runner = compiled.run
        self._c_launch = runner.launch
        self._grid = tuple(grid) + (1,) * (3 - len(grid))
        self._function = compiled.function
        self._flags = (runner.launch_cooperative_grid, runner.launch_pdl)
        self._metadata = compiled.packed_metadata
        self._tail = tail
        self._device = device
        self._stream_of = driver.active.get_current_stream  # resolved once: the driver proxy costs a lookup

    def __call__(self, *args):
        gx, gy, gz = self._grid
        coop, pdl = self._flags
        self._c_launch(gx, gy, gz, self._stream_of(self._device), self._function, coop, pdl, None, None,
                       self._metadata, None, None, None, *args, *self._tail)


def int_key(values):
    """What Triton specialises int arguments on (value 1; divisibility by 16), for FastLaunch's key; None when
    one needs 64 bits, which Triton's own path handles by compiling a 64-bit variant."""
    if max(values) >= 2 ** 31 or min(values) < -2 ** 31:
        return None
    return tuple((v == 1, v % 16 == 0) for v in values)


def pointer_key(t):
    """What Triton specialises a pointer argument on: 16-byte alignment (None for an absent tensor)."""
    return None if t is None else t.data_ptr() % 16 == 0
