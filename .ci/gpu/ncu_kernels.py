"""The kernels whose speed targets are missed, run once each between cudaProfilerStart and Stop, for Nsight
Compute to read their hardware counters (cold caches: ncu flushes them before each kernel it replays):
FlashCore's batch-1 GEMV on the 8B projection shapes beside cuBLAS's F.linear, and decode attention (split and
merge kernels) at cache 2048 and 32K, and batch 8 at 4096, beside SDPA; or, given `batch`, the bare GEMV at M = 1
and M = 8 beside cuBLAS at M = 8 (the M = 8 / M = 1 target). Compiling and autotuning happen before the profiled
range.

    ncu --clock-control none --profile-from-start off --section SpeedOfLight ... python3 .ci/gpu/ncu_kernels.py [batch]

Prints the order of the profiled calls (ncu lists kernels by name only). Then, on any machine:

    ncu -i kernels.ncu-rep --csv --page details > ncu.csv && python3 .ci/gpu/ncu_kernels.py summarize ncu.csv
"""
import collections
import csv
import sys

# torch and flashcore are imported where the kernels run, so that summarize works on a machine with neither


def gemv_calls():
    """(label, call) for each 8B projection at M = 1: FlashCore with the engine's norm and SiLU fusions (O and down
    without their residual), then cuBLAS without fusions."""
    import torch
    import torch.nn.functional as F
    from flashcore.ops.gemv import gemv
    calls = []
    hidden = 4096
    shapes = (("O 4096x4096", 4096, 4096, {}), ("QKV 6144x4096 +norm", 6144, 4096, {"norm": True}),
              ("down 4096x14336", 4096, 14336, {}), ("gate/up 28672x4096 +norm +silu", 28672, 4096,
                                                     {"norm": True, "silu": True}))
    for label, n, k, fuse in shapes:
        w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        g = torch.ones(hidden, device="cuda", dtype=torch.float16) if fuse.get("norm") else None
        out = torch.empty(1, n // 2 if fuse.get("silu") else n, device="cuda", dtype=torch.float16)
        kwargs = dict(norm_weight=g, activation="silu_mul" if fuse.get("silu") else None, out=out)
        calls.append((f"flashcore {label}", lambda w=w, x=x, kwargs=kwargs: gemv(x, w, **kwargs)))
        calls.append((f"cublas {label.split(' +')[0]} (no fusion)", lambda w=w, x=x: F.linear(x, w)))
    return calls


def batch_gemv_calls():
    """(label, call) for the bare GEMVs whose M = 8 time misses 1.15x its M = 1 time: FlashCore at M = 1 and 8, then
    cuBLAS at M = 8."""
    import torch
    import torch.nn.functional as F
    from flashcore.ops.gemv import gemv
    calls = []
    for n, k in ((4096, 4096), (6144, 4096), (28672, 4096)):
        w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
        for rows in (1, 8):
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            calls.append((f"flashcore {n}x{k} M={rows}", lambda w=w, x=x: gemv(x, w)))
        calls.append((f"cublas {n}x{k} M=8", lambda w=w, x=x: F.linear(x, w)))
    return calls


def attention_calls():
    """(label, call) for decode attention: FlashCore (split and merge kernels) and SDPA(enable_gqa)."""
    import torch
    import torch.nn.functional as F
    from flashcore.decode import _splits_for, decode_attention
    calls = []
    for batch, cache_len in ((1, 2048), (1, 32768), (8, 4096)):
        k = torch.randn(batch, 8, cache_len, 128, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        q = torch.randn(batch, 32, 1, 128, device="cuda", dtype=torch.float16)
        lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
        # the heuristic's split count, as a call captured in a graph takes it
        splits = _splits_for(batch, 8, cache_len, q.device)
        calls.append((f"flashcore decode B{batch} {cache_len} ({splits} splits)",
                      lambda q=q, k=k, v=v, lens=lens, s=splits: decode_attention(q, k, v, kv_lens=lens, splits=s)))
        calls.append((f"sdpa decode B{batch} {cache_len}",
                      lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)))
    return calls


SUMMARY_METRICS = ("Duration", "DRAM Throughput", "Memory Throughput", "Achieved Occupancy", "Theoretical Occupancy",
                   "Registers Per Thread", "Dynamic Shared Memory Per Block", "Grid Size", "Block Size",
                   "Block Limit Registers", "Block Limit Shared Mem", "Eligible Warps Per Scheduler", "No Eligible",
                   "Warp Cycles Per Issued Instruction")


def summarize(path):
    """One line per profiled kernel from ncu's details page as CSV: the metrics that say what bounds it. Needs
    neither torch nor a GPU."""
    metrics = collections.defaultdict(dict)
    names = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            kernel = int(row["ID"])
            names[kernel] = row["Kernel Name"][:48]
            metrics[kernel][row["Metric Name"]] = f"{row['Metric Value']} {row['Metric Unit']}".strip()
    for kernel in sorted(metrics):
        print(f"{kernel:2d} {names[kernel]}: "
              + " | ".join(f"{name} {metrics[kernel][name]}" for name in SUMMARY_METRICS if name in metrics[kernel]))


def main(batch):
    import torch
    calls = batch_gemv_calls() if batch else gemv_calls() + attention_calls()
    for _ in range(3):  # compile, autotune, settle
        for _, call in calls:
            call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStart()
    for label, call in calls:
        call()
        torch.cuda.synchronize()
        print("profiled:", label, flush=True)
    torch.cuda.cudart().cudaProfilerStop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["summarize"]:
        summarize(sys.argv[2])
    else:
        main(sys.argv[1:2] == ["batch"])
