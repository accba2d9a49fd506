"""Every GEMV launch configuration for the 8B engine's batch-1 projections, timed on the GPU at hand: which tiling
streams each matrix fastest, where the autotuner's pick stands among them, and what the engine gains from the
best ones. A development probe (its output steers gemv.py's config space), not a benchmark of record.

    PYTHONPATH=$PWD python3 .ci/gpu/gemv_sweep.py [WORKERS]    ->  $OUT/gemv_sweep.json

1. compile every (shape, config) pair in WORKERS processes (a cold Triton cache compiles for minutes otherwise);
2. time each in a CUDA graph over rotated weights (nothing stays in L2), fused as the engine runs it, with cuBLAS
   (torch.mm, unfused) and the autotuner's pick beside it;
3. the engine at cache 2048 and the projection chain with the autotuner's picks and with the sweep's best,
   alternated twice.
"""
import gc
import json
import multiprocessing
import os
import sys
import time

# name, N, K, fusion: the engine's batch-1 projections of the 8B shape
SHAPES = (("qkv", 6144, 4096, "norm"), ("o", 4096, 4096, "residual"), ("down", 4096, 14336, "residual"),
          ("gate_up", 28672, 4096, "norm_silu"), ("lm_head", 128256, 4096, "norm"))


def _space(n, k, fusion):
    """(BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages) worth timing for one shape at batch 1."""
    n_out = n // 2 if fusion == "norm_silu" else n
    configs = []
    for block_n in (4, 8, 16, 32):
        for block_k in (512, 1024, 2048, 4096):
            for split_k in (1, 2, 4):
                for warps in (4, 8):
                    for stages in (1, 3):  # the first sweep (run 12): stages moved nothing by more than 1%
                        programs = -(-n_out // block_n) * split_k
                        if block_n * block_k > 16384 * warps // 4 or k // split_k < block_k or programs < 66:
                            continue
                        if split_k > 1 and (n_out > 16384 or programs > 132 * 16):
                            continue
                        configs.append((block_n, block_k, split_k, warps, stages))
    return configs


def _inputs(n, k, fusion, copies, torch):
    weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.float16, device="cuda")
    n_out = n // 2 if fusion == "norm_silu" else n
    kwargs = {}
    if fusion.startswith("norm"):
        kwargs["norm_weight"] = torch.randn(k, dtype=torch.float16, device="cuda")
    if fusion == "norm_silu":
        kwargs["activation"] = "silu_mul"
    out = torch.zeros(1, n_out, dtype=torch.float16, device="cuda")
    if fusion == "residual":
        kwargs["residual"] = out  # in place, as the engine's residual stream
    return weights, x, out, kwargs


def _compile_worker(index, workers):
    import torch

    from flashcore.ops.gemv import gemv
    jobs = [(shape, config) for shape in SHAPES for config in _space(*shape[1:])][index::workers]
    for (_, n, k, fusion), config in jobs:
        weights, x, out, kwargs = _inputs(n, k, fusion, 1, torch)
        gemv(x, weights[0], out=out, config=config, **kwargs)
    torch.cuda.synchronize()


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    start = time.time()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_compile_worker, args=(i, workers)) for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    print(f"compiled in {time.time() - start:.0f} s; failed workers: "
          f"{[i for i, p in enumerate(processes) if p.exitcode]}", flush=True)

    import torch
    import triton

    import flashcore.ops.gemv as gemv_module
    from integration import bench, kernel_bench
    from integration.engine import llama_weights
    from integration.models import llama31_8b
    from integration.timing import copy_bandwidth, rotation_count, time_graph_ms
    bw = copy_bandwidth()
    results = {"device": torch.cuda.get_device_name(), "copy_bandwidth_TBps": bw / 1e12, "shapes": {}}
    print(f"copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    best = {}
    for name, n, k, fusion in SHAPES:
        copies = rotation_count(n * k * 2, limit=16)
        weights, x, out, kwargs = _inputs(n, k, fusion, copies, torch)
        floor_us = n * k * 2 / bw * 1e6

        def timed(call, weights=weights):
            return time_graph_ms(kernel_bench._rotating([lambda w=w: call(w) for w in weights]), copies)["ms"] * 1e3

        rows = []
        for config in _space(n, k, fusion):
            us = timed(lambda w, c=config: gemv_module.gemv(x, w, out=out, config=c, **kwargs))
            rows.append({"config": config, "us": us, "fraction": floor_us / us})
        rows.sort(key=lambda r: r["us"])
        autotuned_us = timed(lambda w: gemv_module.gemv(x, w, out=out, **kwargs))
        picked = [str(c) for c in gemv_module._gemv_autotuned.cache.values()][-1]
        mm_out = torch.empty(1, n, dtype=torch.float16, device="cuda")
        cublas_us = timed(lambda w: torch.mm(x, w.t(), out=mm_out))
        by_stages = {s: min(r["us"] for r in rows if r["config"][4] == s) for s in (1, 3)}
        results["shapes"][name] = {"N": n, "K": k, "fusion": fusion, "floor_us": floor_us, "top": rows[:12],
                                   "configs_timed": len(rows), "autotuned_us": autotuned_us, "autotuned": picked,
                                   "cublas_us": cublas_us, "best_by_stages": by_stages}
        best[(n, k)] = rows[0]["config"]
        print(f"{name:8s} {n}x{k}: best {rows[0]['config']} {rows[0]['us']:.2f} us ({rows[0]['fraction']:.0%}); "
              f"autotuned {autotuned_us:.2f} us ({floor_us / autotuned_us:.0%}) {picked}; cuBLAS {cublas_us:.2f} us; "
              f"best by stages {({s: round(v, 2) for s, v in by_stages.items()})}", flush=True)
        for r in rows[:5]:
            print(f"    {r['config']} {r['us']:.2f} us", flush=True)
        del weights
        gc.collect()

    # The engine with the sweep's best configs: a prune that keeps only the best config of each shape (a single
    # candidate is not benchmarked), against the autotuner's own picks.
    tuner = gemv_module._gemv_autotuned
    autotune_prune = tuner.early_config_prune

    def best_only(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        config = best.get((args["N"] * (2 if args["EPILOGUE"] == 2 else 1), args["K"]))
        if config is None or args["M_PAD"] != 1:
            return autotune_prune(configs, named_args, **kwargs)
        block_n, block_k, split_k, warps, stages = config
        return [triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split_k}, num_warps=warps,
                              num_stages=stages)]

    model = llama31_8b(dtype=torch.float16)
    engine_rows, chains = [], []
    for repeat in range(2):
        for variant, prune in (("autotuned", autotune_prune), ("sweep_best", best_only)):
            tuner.early_config_prune = prune
            tuner.cache.clear()
            for r in bench.decode_sweep(model, [2048], bw, ["flashcore-engine"], log=lambda *a: None):
                engine_rows.append(dict(r, variant=variant, repeat=repeat))
                print(f"engine {variant:10s} rep {repeat}: {r['ms_per_token']:.4f} ms "
                      f"({r['ratio_to_floor']:.4f}x floor)", flush=True)
            chain = kernel_bench.projection_chain(llama_weights(model, 64), bw)
            chains.append(dict(chain, variant=variant, repeat=repeat))
            print(f"chain  {variant:10s} rep {repeat}: {chain['flashcore_ms']:.4f} ms "
                  f"({chain['flashcore_ratio_to_floor']:.4f}x); cuBLAS {chain['cublas_ms']:.4f} ms", flush=True)
    results["engine"] = engine_rows
    results["chain"] = chains
    results["best"] = {f"{n}x{k}": c for (n, k), c in best.items()}
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "gemv_sweep.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    print(f"total {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
