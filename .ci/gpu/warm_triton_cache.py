"""Fill Triton's on-disk cache with every GEMV candidate the GPU notebooks will autotune, compiling in parallel.

On a fresh machine the autotuner compiles each of its candidates one after another, minutes of serial work in
notebook 04. Here each worker process takes a share of the candidate configs and autotunes every shape, batch and
fusion the notebooks use with only that share: together they compile everything once, in parallel, and the
notebooks then find each kernel in the cache. The timings measured here are thrown away.
Usage (on the GPU machine): python3 .ci/gpu/warm_triton_cache.py [WORKERS] [--engine-only]
(--engine-only: just the fp16 batch-1 kernels, the engine's and the plain ones, what the development probe needs.)
"""
import multiprocessing
import sys
import time

ENGINE_ROWS = (1, 2, 4, 32)  # the engine's batch 1 and 2 (the row kernel), 3-16 and 17-32 (padded to 16, 32)
BENCH_ROWS = (1, 2)       # notebook 04's GEMV sweep (2, 4 and 8 rows share the 16-row kernels)
ENGINE_FUSIONS = (((6144, 4096), "norm"), ((128256, 4096), "norm"), ((28672, 4096), "norm_silu"),
                  ((4096, 4096), "residual"), ((4096, 14336), "residual"))


def _tasks():
    """(N, K, rows, fusion, dtype) for every autotuning key the notebooks reach: notebook 04 in fp16, notebook
    03's engines (batch 1 and 4) in fp16, fp32 and bf16. Only the dtype, padded rows and fusion pick a compiled
    kernel; the 8B shapes stand for every model's (their sizes are multiples of 16 alike)."""
    from integration.kernel_bench import GEMV_SHAPES_8B

    tasks = [(n, k, m, "plain", "float16") for n, k in GEMV_SHAPES_8B for m in BENCH_ROWS]
    tasks += [(n, k, m, fusion, "float16") for (n, k), fusion in ENGINE_FUSIONS for m in ENGINE_ROWS]
    tasks += [(n, k, m, fusion, dtype) for (n, k), fusion in ENGINE_FUSIONS for m in (1, 4)
              for dtype in ("float32", "bfloat16")]
    return tasks


def _worker(index, workers, engine_only):
    import torch

    from flashcore.ops import gemv as gemv_module

    tuner = gemv_module._gemv_autotuned
    tuner.configs = tuner.configs[index::workers]
    # A launch with a fixed config (gemv.fixed_config) compiles that one config whatever a worker's share: worker
    # 0 compiles it.
    def autotuned(n, k, m, fusion, dtype):
        return gemv_module.fixed_config(n, k, m == 1, dtype != "float32", fusion.startswith("norm"), 1) is None

    tasks = [(n, k, m, fusion, dtype) for n, k, m, fusion, dtype in _tasks()
             if (not engine_only or (m == 1 and dtype == "float16"))
             and (index == 0 or autotuned(n, k, m, fusion, dtype))]
    for n, k, m, fusion, dtype in tasks:
        dtype = getattr(torch, dtype)
        x = torch.randn(m, k, dtype=dtype, device="cuda")
        weight = torch.randn(n, k, dtype=dtype, device="cuda")
        kwargs = {}
        if fusion.startswith("norm"):
            kwargs["norm_weight"] = torch.ones(k, dtype=dtype, device="cuda")
        if fusion == "norm_silu":
            kwargs["activation"] = "silu_mul"
        if fusion == "residual":
            kwargs["residual"] = torch.zeros(m, n, dtype=dtype, device="cuda")
        gemv_module.gemv(x, weight, **kwargs)
        del x, weight, kwargs
    torch.cuda.synchronize()


def main():
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    workers = int(numbers[0]) if numbers else min(12, multiprocessing.cpu_count())
    start = time.time()
    context = multiprocessing.get_context("spawn")
    engine_only = "--engine-only" in sys.argv
    processes = [context.Process(target=_worker, args=(i, workers, engine_only)) for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
    print(f"GEMV candidates compiled by {workers} workers in {time.time() - start:.0f} s"
          + (f"; workers {failed} failed" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
