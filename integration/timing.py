"""Timing primitives for the benchmarks: copy bandwidth, CUDA-graph replay timing, statistics.

Every benchmark here times on the device with CUDA events, after a warm-up, and reports the median with the
10th/90th percentiles. What is compared side by side is timed in turns, one call of each per round. Inputs that
would sit in the 50 MB L2 are rotated among several copies, so kernels are timed streaming from device memory as
they would in a model.
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


def _one_call_ms(fn):
    """Milliseconds of one fn() on the device with events; without CUDA, on the host clock."""
    if not torch.cuda.is_available():
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_side_by_side_ms(fns, repeats=20, warmup=3):
    """{name: stats_ms} for a dict of functions timed in turn: each round times one call of each, so whatever
    drifts during the measurement (clocks, the host's load) reaches every function alike instead of whichever
    happened to run then. Each call is timed alone, on an idle device, as in time_calls_ms."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_one_call_ms(fn))
    return {name: stats_ms(times) for name, times in samples.items()}


def time_calls_ms(fn, repeats=20, warmup=3):
    """Per-call milliseconds of fn() timed one call at a time with events (fn may launch many kernels); on a
    machine without CUDA, with the host clock (the interpreter's smoke runs)."""
    return time_side_by_side_ms({"fn": fn}, repeats, warmup)["fn"]


def _per_call(stats, calls):
    return {key: value / calls for key, value in stats.items()}


def time_python_side_by_side_ms(runs, calls_per_run=1, repeats=20):
    """{name: per-call milliseconds} of calls made from Python back to back: each of `runs` makes
    `calls_per_run` calls, and each timed run starts on an idle device, so a call costs whichever is longer, the
    host's time to make it or the device's time to run it. The runs take turns (time_side_by_side_ms). (triton's
    do_bench flushes the L2 with a ~50 us kernel before each call it times, which hides any host cost shorter
    than the flush: it measures the device, not a call from Python.)"""
    return {name: _per_call(stats, calls_per_run)
            for name, stats in time_side_by_side_ms(runs, repeats=repeats).items()}


def time_python_ms(fn, calls_per_run=1, repeats=20):
    """time_python_side_by_side_ms for one run function."""
    return time_python_side_by_side_ms({"fn": fn}, calls_per_run, repeats)["fn"]


def time_graphs_side_by_side_ms(fns, calls_per_graph=1, repeats=20):
    """{name: per-call milliseconds} inside CUDA graphs: each fn() is captured once (it may itself make several
    calls, `calls_per_graph` of them), and the graphs' replays take turns (time_side_by_side_ms)."""
    graphs = {name: capture_cuda_graph(fn) for name, fn in fns.items()}
    replays = {name: graph.replay for name, graph in graphs.items()}
    return {name: _per_call(stats, calls_per_graph)
            for name, stats in time_side_by_side_ms(replays, repeats=repeats).items()}


def time_graph_ms(fn, calls_per_graph=1, repeats=20):
    """time_graphs_side_by_side_ms for one function."""
    return time_graphs_side_by_side_ms({"fn": fn}, calls_per_graph, repeats)["fn"]


def rotation_count(nbytes_per_copy, limit=64):
    """How many copies of an input to rotate through so that L2 cannot hold them."""
    return max(2, min(limit, -(-L2_ROTATION_BYTES // max(nbytes_per_copy, 1))))
