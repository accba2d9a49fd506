"""Timing primitives for the benchmarks: copy bandwidth, CUDA-graph replay timing, statistics.

Every benchmark here times on the device with CUDA events, after a warm-up, and reports the median with the
10th/90th percentiles. Inputs that would sit in the 50 MB L2 are rotated among several copies, so kernels are
timed streaming from device memory as they would in a model.
"""
import statistics
import time

import torch

from flashcore.engine.runner import capture_cuda_graph

L2_ROTATION_BYTES = 256 * 2 ** 20  # rotate inputs until this many bytes are in play: several times the L2


def copy_bandwidth(nbytes=2 ** 30, repeats=20):
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written (the floor's yardstick)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * nbytes / statistics.median(times)


def stats_ms(samples_ms):
    """{"ms": median, "ms_p10", "ms_p90"} of a list of milliseconds."""
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"ms": statistics.median(ordered), "ms_p10": pick(0.1), "ms_p90": pick(0.9)}


def time_calls_ms(fn, repeats=20, warmup=3):
    """Per-call milliseconds of fn() timed one call at a time with events (fn may launch many kernels); on a
    machine without CUDA, with the host clock (the interpreter's smoke runs)."""
    for _ in range(warmup):
        fn()
    if not torch.cuda.is_available():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return stats_ms(samples)
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return stats_ms(samples)


def time_python_ms(fn, calls_per_run=1, repeats=20):
    """Per-call milliseconds of calls made from Python back to back: fn() makes `calls_per_run` calls, and each
    timed run starts on an idle device, so a call costs whichever is longer, the host's time to make it or the
    device's time to run it. (triton's do_bench flushes the L2 with a ~50 us kernel before each call it times,
    which hides any host cost shorter than the flush: it measures the device, not a call from Python.)"""
    return {key: value / calls_per_run for key, value in time_calls_ms(fn, repeats=repeats).items()}


def time_graph_ms(fn, calls_per_graph=1, repeats=20):
    """Per-call milliseconds of fn inside a CUDA graph: fn() is captured once (it may itself make several
    calls, `calls_per_graph` of them), and each replay is timed with events."""
    graph = capture_cuda_graph(fn)
    result = time_calls_ms(graph.replay, repeats=repeats)
    return {key: value / calls_per_graph for key, value in result.items()}


def rotation_count(nbytes_per_copy, limit=64):
    """How many copies of an input to rotate through so that L2 cannot hold them."""
    return max(2, min(limit, -(-L2_ROTATION_BYTES // max(nbytes_per_copy, 1))))
