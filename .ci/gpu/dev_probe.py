"""Development probe for one device call: correctness of the new kernels and the engine on CUDA, then the
numbers that steer the next change. Writes $OUT/probe_<parts>.json and logs as it goes.

    PYTHONPATH=/tmp/site:$PWD python3 .ci/gpu/dev_probe.py PART[,PART...]

Parts: check (GEMV and engine against torch/HF), host (launch costs), gemv, attn (decode attention against
SDPA, split tuning at 32K), short (decode at 1K-4K: V-with-K, block, splits; the engine A/B), long (the same grid
at 32K and 128K), prefill (prefill against its published version, carried in .probe/; block configs), chain,
engine, compile, profile (a kernel-time profile of one engine step), ttft (time to first token, and kernel-time
profiles of the engine's prefill and HF's at 8192), m1 (the fixed batch-1 GEMV config: its error, then GEMV rows,
chain, engine at every length and batch sweep), floor (the engine at notebook 04's cache lengths), fuse
(rope_decode_attention against rope_append + decode_attention: bitwise, then the engine A/B), plan (decode_attention's
host fast path against the full path, notebook 04's decode rows, split counts at batch 8), gemv_m (every GEMV
config the autotuner may pick at batch 2-8, against its pick and cuBLAS), batch (the fixed batch 2-32 GEMV config:
its error, GEMV rows, the engine's batch sweep; decode attention's rows), row (the persistent one-row GEMV against
streaming_config's tiled launch: error, a small grid, the engine A/B; probe run26 also timed its first weight
tile loaded before x, and a tl.range-pipelined main loop for the batch GEMV's norm launches: code in 68cb7b5),
flags (module settings against their defaults: the decode V load beside K, the row GEMV's tile rows and programs
per SM; QKV, then the engine A/B), python (decode attention from Python as notebook 04 times it, back-to-back
calls, beside do_bench's flushed median), plan_host (a planned decode call's host time against the previous
commit's decode.py, carried as .probe/decode_before.py, and SDPA), single (decode with one split, which writes the
output itself: in a graph, from Python, and the engine with its split count capped), prefill_ops (the prefill's
fused RMSNorm and SiLU·mul against the torch ops, then time to first token against the previous commit's prefill,
carried as .probe/step_before.py, and HF SDPA), silu (the engine with the gate/up GEMV's libdevice silu against
the previous fast one: .probe/gemv_before.py is `git show 5fffe6c:flashcore/ops/gemv.py`), rope_prefill
(rope_append with one program a token against one a (token, head): .probe/rope_append_before.py is
`git show 7b3deb2:flashcore/ops/rope_append.py`; bits, time, then time to first token), owner (the new row's
block in rope_decode_attention with its V loaded beside its K, against after the scores: bits, the engine A/B),
stages (the persistent one-row GEMV at 3-5 stages and 2-8 tile rows, with and without a norm prologue, beside the
tiled launch and cuBLAS; the engine with the best norm setting), residual (the row kernel's residual read a tile
ahead, and bare one-row launches through it: error, O with and without its residual, the engine A/B), prenorm
(NORM_BEFORE_BATCH against the autotuned norm prologue at 2-16 rows: error, launches, the engine's batch sweep),
warps (the decode split kernel's warps and stages at 32K and batch 8, then the engine with the best), rows (2-8
rows through the persistent row GEMV against batch_config's launch and cuBLAS: error, a grid, the engine's batch
sweep), rows2 (two rows through the row GEMV shape by shape, bare and fused, against batch_config and cuBLAS),
bstages (batch_config's launch at 4 and 8 rows against explicit stages, blocks and splits, and cuBLAS), rows2_engine
(the engine's batch-2 step under row_launch's run41 dispatch against acff090's; GEMV rows at M = 2), chunked (the
persistent chunked row GEMV on the down projection against streaming_config: error, a grid, the engine A/B),
yardstick (the copy-bandwidth yardstick at a process's start, after 1 s of copies, and over 200 copies), pdl
(programmatic dependent launch off against on: decode attention in graphs, the projection chain, the engine A/B),
cap (PDL's early release from the batch-1 kernels, the persistent GEMVs held to their programs per SM,
against releases at exit: bits, decode attention, chain, GEMV rows, the engine A/B and its batch sweep), prefetch
(persistent GEMVs released early asking L2 for their first weight tiles at their wait, over tile counts: chain,
GEMV rows at M = 1, the engine; run53 also timed decode's split kernel asking for key/value blocks, bdbf330),
capacity (the engine's step at short caches when it is sized for 128K, whose split count follows its capacity,
against one sized to the cache), tiledearly (batch_config's launches released early and held against released at
exit: bits, GEMV rows at 2-8 rows, the batch sweep), early2 (every one-wave kernel of the batch-2 step released early
and held, and the tiled launches released early asking L2 for a first weight tile: bits, GEMV rows, batch sweep),
tiledgrid (batch_config's launches at other blocks, stages and prefetch depths, released early and held: error, GEMV
rows at 4 and 8 rows beside cuBLAS, the batch sweep), splitk (the tiled launch up to 8 rows with K unsplit or split in
2: error, GEMV rows at 1, 4 and 8 rows, the batch 4 and 8 steps), overlap (GEMV rows at 1-8 rows without PDL,
with PDL released at exit, and as shipped: what overlapping its neighbours gives each launch).
Parts tma (the TMA prefill kernel; run10 also timed PDL on the tiled GEMVs of the time), contig (decode splits over
runs of consecutive key blocks), merge (the merge inside the split kernel), norm (wide, pipelined RMSNorm prologue
loads in the batch GEMV) and pbatch (a persistent batch GEMV for 2-32 rows against batch_config's tiled launch)
measured code that was not kept: they are in commits bf9283d, ac208e3, fc26433, 0ba9643 and 688d897, with
PERF_NOTES.md's verdict."""
import gc
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
import triton

import flashcore  # noqa: F401
import flashcore.ops.gemv as gemv_module
from flashcore import _pdl
from flashcore.decode import decode_attention
from flashcore.ops.gemv import gemv
from flashcore.testing import within_rule
from integration import bench, kernel_bench
from integration.engine import FlashCoreEngine
from integration.models import llama31_8b
from integration.timing import copy_bandwidth

OUT = os.environ.get("OUT", "/tmp")
parts = sys.argv[1].split(",") if len(sys.argv) > 1 else ["check", "gemv", "chain", "attn", "engine", "profile"]
results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
log = lambda *a: print(*a, flush=True)  # noqa: E731
t0 = time.time()
bw = copy_bandwidth()
results["copy_bandwidth_TBps"] = bw / 1e12
log(f"copy bandwidth {bw / 1e12:.3f} TB/s")


def release():
    """Give the memory of what a part deleted back to the device before the next part allocates."""
    gc.collect()
    torch.cuda.empty_cache()


def load_carried(name, path):
    """A module from a file carried to the device beside the tree (an earlier version of one, for an A/B)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def module_setting(module, name, value):
    """A variant for the *_alternated helpers: a function that sets module.name to value."""
    return lambda: setattr(module, name, value)


def save():
    with open(os.path.join(OUT, f"probe_{'_'.join(parts)}.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)


def engine_alternated(label, variants, cache_lens=(512, 2048), repeats=2):
    """The 8B engine at each cache length under each variant (name -> a function that puts it in place), the
    variants alternated `repeats` times; rows tagged with variant and repeat go to results[f"{label}_engine"],
    saved as they come. The caller restores its defaults afterwards."""
    model = llama31_8b(dtype=torch.float16)
    rows = results[f"{label}_engine"] = []
    for repeat in range(repeats):
        for name, put_in_place in variants.items():
            put_in_place()
            for r in bench.decode_sweep(model, list(cache_lens), bw, ["flashcore-engine"], log=lambda *a: None):
                rows.append(dict(r, variant=name, repeat=repeat))
                log(f"{label} engine {name:12s} rep {repeat} cache {r['cache_len']:6d}: {r['ms_per_token']:.4f} ms "
                    f"({r['ratio_to_floor']:.4f}x)")
            save()
    del model
    release()
    return rows


def batch_sweep_alternated(label, variants, batches, cache_len=2048, repeats=2):
    """The 8B engine's batch sweep at one cache length under each variant (name -> a function that puts it in
    place), the variants alternated `repeats` times; rows tagged with variant and repeat go to
    results[f"{label}_batch_sweep"], saved as they come. The caller restores its defaults afterwards."""
    model = llama31_8b(dtype=torch.float16)
    rows = results[f"{label}_batch_sweep"] = []
    for repeat in range(repeats):
        for name, put_in_place in variants.items():
            put_in_place()
            for r in bench.batch_sweep(model, list(batches), cache_len, bw):
                rows.append(dict(r, variant=name, repeat=repeat))
                log(f"{label} engine {name:12s} rep {repeat} batch {r['batch']:2d}: {r['ms_per_step']:.3f} ms")
            save()
    del model
    release()
    return rows


def ttft_alternated(label, variants, prompt_lens=(2048, 8192, 32768), repeats=4):
    """Time to first token of the 8B engine under each variant (name -> a function that puts it in place) and of
    HF generate() with SDPA, all in turns, at each prompt length; rows with each one's first token go to
    results[f"{label}_ttft"], saved as they come. The caller restores its defaults afterwards."""
    from integration.llama_flashcore import attention_implementation
    from integration.timing import time_side_by_side_ms
    model = llama31_8b(dtype=torch.float16)
    engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=max(prompt_lens) + 8)
    rows = results[f"{label}_ttft"] = []
    for prompt_len in prompt_lens:
        ids = torch.randint(0, 128000, (1, prompt_len), device="cuda")

        def engine_with(put_in_place):
            def run():
                put_in_place()
                return engine.generate(ids, max_new_tokens=1)
            return run

        def hf():
            with attention_implementation(model, "sdpa"):
                return model.generate(ids, max_new_tokens=1, do_sample=False)

        runs = {f"engine, {name}": engine_with(put_in_place) for name, put_in_place in variants.items()}
        runs["hf-sdpa"] = hf
        firsts = {name: run()[0, -1].item() for name, run in runs.items()}
        times = time_side_by_side_ms(runs, repeats=repeats, warmup=1)
        rows.append({"prompt_len": prompt_len, "first_tokens": firsts,
                     **{name: {k: round(v, 2) for k, v in t.items()} for name, t in times.items()}})
        log(f"{label} ttft", rows[-1])
        save()
    del engine, model
    release()
    return rows


def rope_decode_cases():
    """The fused RoPE decode's GPU check cases: (dtype, kv_lens, kv_start, [K; V] cache, qkv, cos, sin, splits) for
    the 8B heads, a batch of 4 of lengths 1 to 4097 in a 4160-row cache (two left-padded), fp16 and bf16, 1 / 16 /
    33 splits."""
    from flashcore.ops.rope_append import rope_tables
    for dtype in (torch.float16, torch.bfloat16):
        lens = torch.tensor([1, 700, 2048, 4097], dtype=torch.int32, device="cuda")
        start = torch.tensor([0, 5, 0, 130], dtype=torch.int32, device="cuda")
        cache = torch.randn(2, 4, 8, 4160, 128, device="cuda", dtype=dtype)
        qkv = torch.randn(4, 48 * 128, device="cuda", dtype=dtype)
        inv_freq = 1.0 / (500000 ** (torch.arange(0, 128, 2, dtype=torch.float32, device="cuda") / 128))
        cos, sin = rope_tables(inv_freq, 1.0, 8192, dtype)
        for splits in (1, 16, 33):
            yield dtype, lens, start, cache, qkv, cos, sin, splits


def decode_grid(cache_lens, block_ns, splits_options):
    """Decode attention in a graph over rotated caches (batch 1) for every V-load placement, block size and split
    count; the module's defaults are restored afterwards."""
    import flashcore.decode as decode_module
    defaults = decode_module.DECODE_LOAD_V_WITH_K, decode_module.DECODE_BLOCK_N
    grid = []
    for v_with_k in (False, True):
        decode_module.DECODE_LOAD_V_WITH_K = v_with_k
        for block_n in block_ns:
            decode_module.DECODE_BLOCK_N = block_n
            for cache_len in cache_lens:
                for r in kernel_bench.decode_tuning_rows(cache_len, bw, splits_options):
                    grid.append(dict(r, v_with_k=v_with_k, block_n=block_n))
                    log(f"decode {cache_len:6d} v_with_k={v_with_k:d} block {block_n:3d} splits {r['splits']:2d}: "
                        f"{r['graph_us']:7.2f} us ({r['bandwidth_fraction']:.0%})")
    decode_module.DECODE_LOAD_V_WITH_K, decode_module.DECODE_BLOCK_N = defaults
    return grid


def chain_and_gemv_alternated(label, variants, rows_m=(1, 8), repeats=2):
    """The projection chain of the 8B step, then GEMV rows at each M, under each variant (name -> a function that
    puts it in place), the variants alternated `repeats` times; rows go to results[f"{label}_chain"] and
    results[f"{label}_gemv"], saved as they come. The caller restores its defaults afterwards."""
    from integration.engine import llama_weights
    model = llama31_8b(dtype=torch.float16)
    weights = llama_weights(model, 64)
    chains = results[f"{label}_chain"] = []
    for repeat in range(repeats):
        for name, put_in_place in variants.items():
            put_in_place()
            chain = kernel_bench.projection_chain(weights, bw)
            chains.append(dict(chain, variant=name, repeat=repeat))
            log(f"{label} chain {name:5s} rep {repeat}: {chain['flashcore_ms']:.4f} ms "
                f"({chain['flashcore_ratio_to_floor']:.4f}x), cublas {chain['cublas_ms']:.4f}")
            save()
    del weights, model
    release()
    gemv_rows_alternated(label, variants, kernel_bench.GEMV_SHAPES_8B, rows_m, repeats)


def gemv_rows_alternated(label, variants, shapes, rows_m, repeats=2):
    """GEMV rows (beside cuBLAS) of each [N, K] shape at each M under each variant (name -> a function that puts it
    in place), the variants alternated `repeats` times; rows go to results[f"{label}_gemv"], saved as they come."""
    gemvs = results[f"{label}_gemv"] = []
    for repeat in range(repeats):
        for name, put_in_place in variants.items():
            put_in_place()
            for r in kernel_bench.gemv_rows(bw, shapes=shapes, rows_m=rows_m):
                gemvs.append(dict(r, variant=name, repeat=repeat))
                log(f"{label} gemv {name:14s} {r['shape']:>12s} M={r['M']}: {r['flashcore_us']:6.2f} us "
                    f"({r['bandwidth_fraction']:.0%}) cublas {r['cublas_us']:6.2f}")
            save()


def gemv_bitwise(label, variants, shapes, row_counts):
    """Plain, residual and SiLU·mul GEMV launches of each [N, K] shape at each row count under each variant (name ->
    a function that puts it in place), against the first variant's bits: the count of shapes the same goes to
    results[f"{label}_bitwise"]. The caller restores its defaults afterwards."""
    same = []
    for n, k in shapes:
        for rows in row_counts:
            x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
            w = torch.randn(2 * n, k, device="cuda", dtype=torch.float16) * 0.02
            residual = torch.randn(rows, n, device="cuda", dtype=torch.float16)
            outputs = []
            for put_in_place in variants.values():
                put_in_place()
                outputs.append([gemv(x, w[:n]), gemv(x, w[:n], residual=residual), gemv(x, w, activation="silu_mul")])
                torch.cuda.synchronize()
            same.append(all(torch.equal(a, b) for other in outputs[1:] for a, b in zip(outputs[0], other)))
    results[f"{label}_bitwise"] = f"{sum(same)}/{len(same)}"
    log(f"{label} {sum(same)}/{len(same)} shapes bitwise the same under every variant")


def decode_attention_alternated(label, variants, cases):
    """Decode attention (fp16, 32 query / 8 KV heads, D = 128) at each (batch, cache length) under each variant (name
    -> a function that puts it in place): in graphs over rotated caches with a fixed workspace and split count, then
    from Python as notebook 04 times it (the default call, back to back over the caches) beside SDPA, in turns. Rows
    go to results[f"{label}_attention"], saved as they come. The caller restores its defaults afterwards."""
    from flashcore.decode import DecodeWorkspace, num_splits, sm_count
    from integration.timing import rotation_count, time_graphs_side_by_side_ms, time_python_side_by_side_ms
    rows = results[f"{label}_attention"] = []
    for batch, cache_len in cases:
        kv_bytes = 2 * batch * 8 * cache_len * 128 * 2
        copies = rotation_count(kv_bytes, limit=8)
        keys = [torch.randn(batch, 8, cache_len, 128, dtype=torch.float16, device="cuda") for _ in range(copies)]
        values = [torch.randn_like(k) for k in keys]
        q = torch.randn(batch, 32, 1, 128, dtype=torch.float16, device="cuda")
        lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
        out = torch.empty(batch, 1, 32, 128, dtype=torch.float16, device="cuda").transpose(1, 2)
        splits = num_splits(batch, 8, cache_len, sm_count(q.device))
        workspace = DecodeWorkspace.for_shape(batch, 32, 128, splits, q.device)
        rounds = max(1, 32 // copies)

        def graph_calls(put_in_place):
            def run():
                put_in_place()
                for k, v in zip(keys, values):
                    decode_attention(q, k, v, kv_lens=lens, out=out, workspace=workspace, splits=splits)
            return run

        def python_calls(put_in_place):
            def run():
                put_in_place()
                for _ in range(rounds):
                    for k, v in zip(keys, values):
                        decode_attention(q, k, v, kv_lens=lens)
            return run

        def sdpa_calls():
            for _ in range(rounds):
                for k, v in zip(keys, values):
                    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        fns = {name: graph_calls(put_in_place) for name, put_in_place in variants.items()}
        for fn in fns.values():
            fn()
        us = {name: t["ms"] * 1e3 for name, t in time_graphs_side_by_side_ms(fns, copies, repeats=20).items()}
        runs = dict({name: python_calls(put_in_place) for name, put_in_place in variants.items()}, sdpa=sdpa_calls)
        for run in runs.values():
            run()
        python = time_python_side_by_side_ms(runs, copies * rounds)
        python_us = {name: t["ms"] * 1e3 for name, t in python.items()}
        python_spread = {name: (t["ms_p10"] * 1e3, t["ms_p90"] * 1e3) for name, t in python.items()}
        rows.append({"batch": batch, "cache_len": cache_len, "splits": splits, "us": us, "python_us": python_us,
                     "python_p10_p90_us": python_spread, "floor_us": kv_bytes / bw * 1e6})
        log(f"{label} attention B={batch} {cache_len}: graph " + ", ".join(f"{n} {t:.2f}" for n, t in us.items())
            + f" us (floor {kv_bytes / bw * 1e6:.2f}); from Python "
            + ", ".join(f"{n} {t:.2f} ({python_spread[n][0]:.1f}-{python_spread[n][1]:.1f})"
                        for n, t in python_us.items()))
        save()
        del keys, values
        release()
    return rows


if "check" in parts:
    rows = []
    for n, k in [(4096, 4096), (6144, 4096), (1024, 4096), (4096, 14336), (28672, 4096), (100, 1000)]:
        for m in (1, 2, 8, 17, 32):
            for dtype in (torch.float16, torch.bfloat16):
                for config in (None, (16, 128, 4)):
                    x = torch.randn(m, k, device="cuda", dtype=dtype)
                    w = (torch.randn(n, k, device="cuda", dtype=dtype) * 0.02)
                    ref = x.double() @ w.double().T
                    ours = (gemv(x, w, config=config).double() - ref).abs().max().item()
                    theirs = (F.linear(x, w).double() - ref).abs().max().item()
                    rows.append({"shape": f"{n}x{k}", "M": m, "dtype": str(dtype), "config": config, "err": ours,
                                 "torch_err": theirs, "ok": within_rule(ours, theirs)})
    bad = [r for r in rows if not r["ok"]]
    results["gemv_check"] = {"cases": len(rows), "failed": bad}
    log(f"gemv check: {len(rows) - len(bad)}/{len(rows)} within 2x F.linear error; failed: {bad[:5]}")
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype, layers in ((torch.float32, 4), (torch.float16, None)):
        model = llama31_8b(dtype=dtype, num_layers=layers)
        ids = torch.randint(0, 128000, (4, 24), device="cuda")
        mask = torch.ones_like(ids)
        mask[1, :5] = 0
        mask[3, :11] = 0
        ref = model.generate(ids, attention_mask=mask, max_new_tokens=24, min_new_tokens=24, do_sample=False)
        engine = FlashCoreEngine(model, max_batch_size=4, max_seq_len=256)
        out = engine.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=[])
        same = (out == ref).all(-1).tolist()
        single = engine.generate(ids[:1], max_new_tokens=24, eos_token_id=[])
        results[f"engine_vs_hf_{dtype}"] = {"identical_rows": same,
                                            "single_identical": bool(torch.equal(single[0], ref[0]))}
        log(f"engine vs HF {dtype}: rows identical {same}, single {torch.equal(single[0], ref[0])}")
        sampled = engine.generate(ids[:2], max_new_tokens=16, do_sample=True, top_k=20, top_p=0.9, temperature=0.8)
        log(f"sampled {sampled[:, 24:].tolist()}")
        del engine, model
        torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = True
    save()

if "host" in parts:
    import timeit
    import triton.language as tl
    from flashcore.decode import DecodeWorkspace
    from flashcore._validate import check_attention_call
    q = torch.randn(1, 32, 1, 128, dtype=torch.float16, device="cuda")
    k = torch.randn(1, 8, 512, 128, dtype=torch.float16, device="cuda")
    v = torch.randn_like(k)
    lens = torch.full((1,), 512, dtype=torch.int32, device="cuda")
    n = 2000
    host = {}
    out = torch.empty_like(q)
    ws = DecodeWorkspace.for_shape(1, 32, 128, 8, q.device)

    @triton.jit
    def _tiny(a, b, n):
        tl.store(b, tl.load(a) + n)

    for name, fn in (("decode_attention", lambda: decode_attention(q, k, v, kv_lens=lens)),
                     ("validate_call", lambda: check_attention_call(q, k, v, lens, None)),
                     ("decode_attention_out_ws", lambda: decode_attention(q, k, v, kv_lens=lens, out=out, workspace=ws,
                                                                          splits=2)),
                     ("triton_launch_3_args", lambda: _tiny[(1,)](lens, lens, 1)),
                     ("torch.empty", lambda: torch.empty(1, 1, 32, 128, dtype=q.dtype, device=q.device)),
                     ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))):
        fn()
        torch.cuda.synchronize()
        host[name] = timeit.timeit(fn, number=n) / n * 1e6
        torch.cuda.synchronize()
    results["host_us"] = host
    log("host us per call:", host)
    save()

if "plan" in parts:
    # decode_attention's host fast path (a plan per call signature) against the full path, same process
    import cProfile
    import pstats
    import timeit
    import flashcore.decode as decode_module
    planned_signature = decode_module._plan_signature
    host = {}
    for batch, cache_len in ((1, 512), (1, 4096), (8, 4096)):
        q = torch.randn(batch, 32, 1, 128, dtype=torch.float16, device="cuda")
        k = torch.randn(batch, 8, cache_len, 128, dtype=torch.float16, device="cuda")
        v = torch.randn_like(k)
        lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
        calls = {"planned": lambda: decode_attention(q, k, v, kv_lens=lens),
                 "full": lambda: decode_attention(q, k, v, kv_lens=lens),
                 "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)}
        same = None
        for rep in range(2):
            for name, fn in calls.items():
                decode_module._plan_signature = planned_signature if name == "planned" else (lambda *a: None)
                got = fn()
                if name != "sdpa":
                    same = got if same is None else same
                    assert torch.equal(got, same), "planned and full paths differ"
                torch.cuda.synchronize()
                us = timeit.timeit(fn, number=2000) / 2000 * 1e6
                torch.cuda.synchronize()
                host.setdefault(f"B{batch}_{cache_len}_{name}", []).append(us)
                log(f"host B={batch} cache {cache_len} rep {rep} {name}: {us:.1f} us a call")
    decode_module._plan_signature = planned_signature
    results["host_us"] = host
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(2000):
        calls["planned"]()
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)
    results["decode_rows"] = kernel_bench.decode_attention_rows((512, 2048, 8192, 32768, 131072), bw, batches=(1,))
    results["decode_rows"] += kernel_bench.decode_attention_rows((4096,), bw, batches=(8,))
    for r in results["decode_rows"]:
        log(f"decode B={r['batch']} {r['cache_len']:6d}: python {r['flashcore_us']:6.1f} us (sdpa "
            f"{r['sdpa_gqa_us']:6.1f}), graph {r['flashcore_graph_us']:6.1f} (sdpa {r['sdpa_graph_us']:6.1f}), "
            f"{r['bandwidth_fraction']:.0%} of copy bandwidth, {r['splits']} splits")
    results["batch8_splits"] = kernel_bench.decode_tuning_rows(4096, bw, (2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32),
                                                               batch=8)
    for r in results["batch8_splits"]:
        log(f"decode B=8 4096 splits {r['splits']:2d}: {r['graph_us']:6.1f} us ({r['bandwidth_fraction']:.0%})")
    save()

if "gemv_m" in parts:
    # batch 2-8 GEMV: every config the autotuner may pick, timed in graphs over rotated weights, against its pick
    # and cuBLAS (the data for a fixed rule like streaming_config's; the autotuner's picks vary between runs)
    from integration.timing import rotation_count, time_graph_ms
    sweep = []
    for n, k in ((4096, 4096), (1024, 4096), (6144, 4096), (4096, 14336), (28672, 4096), (14336, 4096)):
        copies = rotation_count(n * k * 2, limit=16)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        for m in (2, 4, 8):
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            floor_us = n * k * 2 / bw * 1e6

            def graph_us(**kw):
                calls = [lambda w=w: gemv(x, w, out=out, **kw) for w in weights]
                return time_graph_ms(kernel_bench._rotating(calls), copies)["ms"] * 1e3

            row = {"shape": f"{n}x{k}", "M": m, "autotuned_us": graph_us(),
                   "cublas_us": time_graph_ms(kernel_bench._rotating(
                       [lambda w=w: torch.mm(x, w.t(), out=out) for w in weights]), copies)["ms"] * 1e3}
            named = dict(X=x, W=weights[0], N=n, K=k, M_PAD=16, USE_DOT=True)
            configs = {}
            for c in gemv_module._prune(gemv_module._configs(), named):
                key = (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.kwargs["SPLIT_K"], c.num_warps, 3)
                configs[str(key)] = graph_us(config=key)
            best = min(configs, key=configs.get)
            row.update(configs=configs, best=best, best_us=configs[best])
            sweep.append(row)
            log(f"gemv_m {n}x{k} M={m}: autotuned {row['autotuned_us']:.2f} us, best {best} {row['best_us']:.2f} "
                f"({floor_us / row['best_us']:.0%}), cublas {row['cublas_us']:.2f}; {len(configs)} configs")
            results["gemv_m"] = sweep
            save()
        del weights
        release()

if "gemv" in parts:
    results["gemv"] = kernel_bench.gemv_rows(bw, rows_m=(1, 2, 8))
    for r in results["gemv"]:
        log(f"gemv {r['shape']:>12s} M={r['M']}: flashcore {r['flashcore_us']:7.1f} us "
            f"({r['bandwidth_fraction']:.0%}) cublas {r['cublas_us']:7.1f} us ({r['cublas_bandwidth_fraction']:.0%})")
    save()

if "attn" in parts:
    results["decode_attention"] = kernel_bench.decode_attention_rows([512, 2048, 8192, 32768, 131072], bw)
    results["decode_attention"] += kernel_bench.decode_attention_rows([4096], bw, batches=(8,))
    for r in results["decode_attention"]:
        log(f"decode B={r['batch']} {r['cache_len']:6d}: py {r['flashcore_us']:6.1f} (sdpa {r['sdpa_gqa_us']:6.1f}) "
            f"graph {r['flashcore_graph_us']:6.1f} (sdpa {r['sdpa_graph_us']:6.1f}) bw {r['bandwidth_fraction']:.0%}")
    results["decode_tuning"] = kernel_bench.decode_tuning_rows(32768, bw, (8, 12, 16, 24, 33, 48, 64))
    for r in results["decode_tuning"]:
        log(f"tune 32K splits {r['splits']}: {r['graph_us']:.1f} us {r['bandwidth_fraction']:.0%}")
    save()

if "short" in parts:
    # Decode attention at short caches (1K-4K), where the engine misses 1.15x its floor: the V load issued beside
    # the K load or after the scores, block size and split count, in a graph over rotated caches; then the engine
    # itself with each choice, A and B alternated twice to show the run's noise.
    import flashcore.decode as decode_module
    import flashcore.engine.step as step_module
    grid = decode_grid((1024, 2048, 4096), (32, 64), (8, 16, 33, 64))
    results["short_grid"] = grid
    save()
    best = {n: min((r for r in grid if r["cache_len"] == n and r["v_with_k"]), key=lambda r: r["graph_us"])
            for n in (1024, 2048, 4096)}
    model = llama31_8b(dtype=torch.float16)
    heuristic = step_module.num_splits
    engine_rows = []
    variants = [("v_late", False, None), ("v_with_k", True, None), ("v_with_k_best", True, best)]
    for repeat in range(2):
        for name, v_with_k, chosen in variants:
            decode_module.DECODE_LOAD_V_WITH_K = v_with_k
            for cache_len in (1024, 2048, 4096):
                if chosen:
                    decode_module.DECODE_BLOCK_N = chosen[cache_len]["block_n"]
                    step_module.num_splits = lambda *a, n=cache_len, **k: chosen[n]["splits"]
                for r in bench.decode_sweep(model, [cache_len], bw, ["flashcore-engine"], log=log):
                    engine_rows.append(dict(r, variant=name, repeat=repeat))
                decode_module.DECODE_BLOCK_N = 64
                step_module.num_splits = heuristic
    decode_module.DECODE_LOAD_V_WITH_K = False
    results["short_engine"] = engine_rows
    results["short_best"] = best
    for r in engine_rows:
        log(f"engine {r['variant']:14s} rep {r['repeat']} cache {r['cache_len']:5d}: {r['ms_per_token']:.4f} ms "
            f"p10 {r['ms_p10']:.4f} p90 {r['ms_p90']:.4f} ({r['ms_per_token'] / r['floor_ms']:.4f}x floor)")
    save()
    del model
    gc.collect()
    torch.cuda.empty_cache()

if "long" in parts:
    # Decode attention at long caches, where it trails SDPA (128K) or the 90%-of-bandwidth target (32K): split
    # count, block size and the V-with-K load, in a graph over rotated caches (batch 1); the heuristic's pick is
    # the 33-split, 64-block, V-late row.
    results["long_grid"] = decode_grid((32768, 131072), (64, 128), (8, 16, 24, 33, 48, 64))
    save()

if "prefill" in parts:
    # The causal prefill kernel against its last published version (.probe/prefill_8225120.py, carried: the
    # unmasked interior, longest-first program order and FastLaunch launcher are what changed), SDPA's backends
    # beside them: TFLOP/s from Python (do_bench, back to back: host time included) and in a CUDA graph (device
    # only); then block-size variants of the new kernel; then the engine's time to first token.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import flashcore.prefill as prefill_module
    from flashcore import prefill_attention
    from integration.timing import time_graph_ms
    baseline = load_carried("prefill_baseline", ".probe/prefill_8225120.py")
    rows = []

    def tflops(flops, fn):
        py_us = kernel_bench._median_us(fn)
        graph_us = time_graph_ms(fn)["ms"] * 1e3
        return {"py_tflops": flops / py_us / 1e6, "graph_tflops": flops / graph_us / 1e6}

    for dtype in (torch.float16, torch.bfloat16):
        for head_dim, (hq, hkv) in ((128, (32, 8)), (64, (9, 3))):
            for n in (1024, 4096, 16384):
                q = torch.randn(1, hq, n, head_dim, dtype=dtype, device="cuda")
                k = torch.randn(1, hkv, n, head_dim, dtype=dtype, device="cuda")
                v = torch.randn_like(k)
                kf, vf = (t.repeat_interleave(hq // hkv, dim=1) for t in (k, v))
                flops = 4 * n * n * head_dim * hq / 2
                new_out = prefill_attention(q, k, v, causal=True)
                old_out = baseline.prefill_attention(q, k, v, causal=True)
                row = {"dtype": str(dtype), "D": head_dim, "n": n,
                       "max_diff_new_vs_old": (new_out.float() - old_out.float()).abs().max().item()}
                for name, fn in (("new", lambda: prefill_attention(q, k, v, causal=True)),
                                 ("old", lambda: baseline.prefill_attention(q, k, v, causal=True))):
                    row.update({f"{name}_{key}": val for key, val in tflops(flops, fn).items()})
                for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel(backend):
                            row[f"{name}_py_tflops"] = flops / kernel_bench._median_us(
                                lambda: F.scaled_dot_product_attention(q, kf, vf, is_causal=True)) / 1e6
                    except RuntimeError as err:
                        row[f"{name}_py_tflops"] = str(err)[:80]
                rows.append(row)
                log(f"prefill {row['dtype']:14s} D{head_dim} {n:6d}: new py {row['new_py_tflops']:6.1f} graph "
                    f"{row['new_graph_tflops']:6.1f} | old py {row['old_py_tflops']:6.1f} graph "
                    f"{row['old_graph_tflops']:6.1f} | flash {row['flash_py_tflops']:.1f} cudnn "
                    f"{row['cudnn_py_tflops']:.1f} | diff {row['max_diff_new_vs_old']:.2e}")
    results["prefill_ab"] = rows
    save()
    configured = prefill_module._launch_config
    variants = []
    for config in ((128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 64, 8, 4)):
        prefill_module._launch_config = lambda d, on_gpu, c=config: c
        for n in (4096, 16384):
            q = torch.randn(1, 32, n, 128, dtype=torch.float16, device="cuda")
            k = torch.randn(1, 8, n, 128, dtype=torch.float16, device="cuda")
            v = torch.randn_like(k)
            try:
                r = tflops(4 * n * n * 128 * 32 / 2, lambda: prefill_attention(q, k, v, causal=True))
            except Exception as err:  # a config that does not fit (shared memory) is a result too
                r = {"error": f"{type(err).__name__}: {str(err)[:100]}"}
            variants.append({"config": config, "n": n, **r})
            log(f"prefill config {config} {n}: {r}")
    prefill_module._launch_config = configured
    results["prefill_configs"] = variants
    save()  # time to first token: part ttft


def fused_gemv_checks(rows):
    """The engine's GEMV shapes and fusions at each row count within 2x F.linear's error against float64, in fp16
    and bf16."""
    def normed(t, g):
        return t.double() * torch.rsqrt(t.double().pow(2).mean(-1, keepdim=True) + 1e-5) * g.double()

    checks = []
    for n, k, fusion in ((6144, 4096, "norm"), (4096, 4096, "residual"), (28672, 4096, "silu"),
                         (4096, 14336, "residual"), (128256, 4096, "norm"), (1024, 4096, "plain"), (100, 1000, "norm")):
        for m in rows:
            for dtype in (torch.float16, torch.bfloat16):
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                w = torch.randn(n, k, device="cuda", dtype=dtype) * 0.02
                g = torch.rand(k, device="cuda", dtype=dtype) + 0.5
                r = torch.randn(m, n, device="cuda", dtype=dtype)
                if fusion == "norm":
                    ours, ref = gemv(x, w, norm_weight=g, eps=1e-5), normed(x, g) @ w.double().T
                    theirs = F.linear(normed(x, g).to(dtype), w)
                elif fusion == "residual":
                    ours, ref = gemv(x, w, residual=r), r.double() + x.double() @ w.double().T
                    theirs = r + F.linear(x, w)
                elif fusion == "silu":
                    gate, up = (normed(x, g) @ w.double().T).chunk(2, dim=-1)
                    ref = F.silu(gate) * up
                    ours = gemv(x, w, norm_weight=g, eps=1e-5, activation="silu_mul")
                    tg, tu = F.linear(normed(x, g).to(dtype), w).chunk(2, dim=-1)
                    theirs = F.silu(tg) * tu
                else:
                    ours, ref, theirs = gemv(x, w), x.double() @ w.double().T, F.linear(x, w)
                err, torch_err = (ours.double() - ref).abs().max().item(), (theirs.double() - ref).abs().max().item()
                checks.append({"shape": f"{n}x{k}", "M": m, "fusion": fusion, "dtype": str(dtype), "err": err,
                               "torch_err": torch_err, "ok": within_rule(err, torch_err)})
    return checks


def row_kernel_grid(label, shapes, row_counts, settings_for, repeats):
    """Each shape (name -> (N, K, fusion: norm, activation, residual)) at each row count through batch_config's
    launch, the persistent row kernel at each of settings_for(rows) ((BLOCK_N, programs an SM, stages, warps) that
    fit the shared memory) and, bare, cuBLAS: graphs over rotated weights, in turns. The caller sets PERSISTENT_ROWS
    and ROWS_MAX and restores them with ROWS_LAUNCH."""
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    smem_limit = 220 * 1024
    grid = []
    for name, (n, k, fusion) in shapes.items():
        copies = rotation_count(n * k * 2, limit=8)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        g = torch.rand(k, dtype=torch.float16, device="cuda") + 0.5
        silu = "activation" in fusion
        for m in row_counts:
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            out = torch.zeros(m, n // 2 if silu else n, dtype=torch.float16, device="cuda")
            kw = dict(norm_weight=g if fusion.get("norm") else None, activation=fusion.get("activation"),
                      residual=out if fusion.get("residual") else None)  # in place, as the engine adds it

            def launches(setting, m=m, x=x, out=out, kw=kw):
                def run():
                    gemv_module.PERSISTENT_ROWS = setting is not None
                    if setting is not None:
                        gemv_module.ROWS_LAUNCH[triton.next_power_of_2(m)] = setting
                    for w in weights:
                        gemv(x, w, out=out, **kw)
                return run
            fns = {"batch": launches(None)}
            for bn, p, stages, warps in settings_for(m):
                if bn * k * 2 * (2 if silu else 1) * (stages - 1) * p <= smem_limit:
                    fns[f"row bn{bn} p{p} w{warps}"] = launches((bn, p, stages, warps))
            if not fusion:
                fns["cublas"] = lambda x=x, out=out: [torch.mm(x, w.t(), out=out) for w in weights]
            for fn in fns.values():
                fn()  # compile outside the capture
            timed = time_graphs_side_by_side_ms(fns, copies, repeats=repeats)
            us = {launch: t["ms"] * 1e3 for launch, t in timed.items()}
            grid.append({"shape": name, "M": m, "us": us})
            best = min(us, key=us.get)
            log(f"{label} {name} M{m}: " + ", ".join(f"{launch} {t:.2f}" for launch, t in sorted(us.items(),
                                                                                             key=lambda kv: kv[1])[:4])
                + f" | batch {us['batch']:.2f}" + (f", cublas {us['cublas']:.2f}" if not fusion else "")
                + f" | best {best} at {n * k * 2 / bw / us[best] * 1e6:.0%}")
        save()
        del weights
    return grid


if "m1" in parts:
    # The fixed batch-1 GEMV config (gemv.streaming_config): the engine's shapes and fusions within 2x F.linear's
    # error against float64 in fp16 and bf16; then GEMV rows at M=1, the projection chain, the engine at every
    # length and the batch sweep.
    from integration.engine import llama_weights
    checks = fused_gemv_checks((1,))
    bad = [c for c in checks if not c["ok"]]
    results["m1_check"] = {"cases": len(checks), "failed": bad}
    log(f"batch-1 GEMV check: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; failed {bad}")
    results["gemv"] = kernel_bench.gemv_rows(bw, rows_m=(1,))
    for r in results["gemv"]:
        log(f"gemv {r['shape']:>12s} M=1: {r['flashcore_us']:7.2f} us ({r['bandwidth_fraction']:.0%}) "
            f"cublas {r['cublas_us']:7.2f} us ({r['cublas_bandwidth_fraction']:.0%})")
    save()
    model = llama31_8b(dtype=torch.float16)
    results["projection_chain"] = kernel_bench.projection_chain(llama_weights(model, 64), bw)
    log("chain", results["projection_chain"])
    results["decode"] = bench.decode_sweep(model, [512, 2048, 8192, 32768, 131072, 2048], bw,
                                           ["flashcore-engine"], log=log)
    results["batch_sweep"] = bench.batch_sweep(model, [1, 8, 32], 2048, bw)
    for r in results["batch_sweep"]:
        log(f"batch {r['batch']:2d} at 2048: {r['ms_per_step']:.3f} ms/step, {r['tok_per_s']:.0f} tok/s")
    save()
    del model
    release()

if "batch" in parts:
    # The fixed GEMV config of 2-32 16-bit rows (gemv.batch_config): the engine's shapes and fusions within 2x
    # F.linear's error, GEMV rows against cuBLAS, the engine's batch sweep; then decode attention's rows (the
    # planned call now allocates its output after the split launch)
    checks = fused_gemv_checks((2, 8, 17, 32))
    bad = [c for c in checks if not c["ok"]]
    results["batch_check"] = {"cases": len(checks), "failed": bad}
    log(f"batch GEMV check: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; failed {bad}")
    results["gemv"] = kernel_bench.gemv_rows(bw, rows_m=(1, 2, 4, 8, 16, 32))
    for r in results["gemv"]:
        log(f"gemv {r['shape']:>12s} M={r['M']:2d}: {r['flashcore_us']:7.2f} us ({r['bandwidth_fraction']:.0%}) "
            f"cublas {r['cublas_us']:7.2f} us ({r['cublas_bandwidth_fraction']:.0%})")
    save()
    model = llama31_8b(dtype=torch.float16)
    for rep in range(2):
        rows = bench.batch_sweep(model, [1, 2, 4, 8, 16, 32], 2048, bw)
        results.setdefault("batch_sweep", []).extend(rows)
        for r in rows:
            ratio = r["ms_per_step"] / r["floor_ms"]
            log(f"batch {r['batch']:2d} at 2048: {r['ms_per_step']:.3f} ms/step ({ratio:.3f}x floor), "
                f"{r['tok_per_s']:.0f} tok/s")
    save()
    del model
    release()
    results["decode_rows"] = kernel_bench.decode_attention_rows((512, 1024, 2048, 4096, 8192, 32768, 131072), bw)
    results["decode_rows"] += kernel_bench.decode_attention_rows((4096,), bw, batches=(8,))
    for r in results["decode_rows"]:
        log(f"decode B={r['batch']} {r['cache_len']:6d}: python {r['flashcore_us']:6.1f} us (sdpa "
            f"{r['sdpa_gqa_us']:6.1f}), graph {r['flashcore_graph_us']:6.1f} (sdpa {r['sdpa_graph_us']:6.1f})")
    save()

if "row" in parts:
    # The persistent one-row GEMV (gemv._gemv_row_kernel: x read and normalised once per program, column tiles in
    # a grid-stride loop) against streaming_config's tiled launch: error, the engine's K = 4096 projections over
    # a small grid (tile rows, programs per SM), then the engine at 512 and 2048 with the module's setting, A/B
    from integration.timing import rotation_count, time_graph_ms
    defaults = gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES
    persistent_default = gemv_module.PERSISTENT_ROW
    gemv_module.PERSISTENT_ROW = True
    checks = fused_gemv_checks((1,))
    bad = [c for c in checks if not c["ok"]]
    results["row_check"] = {"cases": len(checks), "failed": bad}
    log(f"row GEMV check: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; failed {bad}")
    # the launches with an RMSNorm prologue (run25: without one the persistent kernel only tied)
    shapes = {"qkv": (6144, 4096, dict(norm=True)), "gate_up": (28672, 4096, dict(norm=True, activation="silu_mul")),
              "lm_head": (128256, 4096, dict(norm=True))}
    weight_of = {"qkv": 32, "gate_up": 32, "lm_head": 1}  # launches per engine step
    # run25's grid (4 and 8 rows a tile, 1-4 programs per SM, 1 or 3 stages) put every 1-stage setting far behind
    # and ran out of shared memory at 8-row [gate; up] tiles with 3 stages: the settings left
    grid = [("tiled", None)] + [(f"row bn{bn} p{p} s3", (bn, p, 3)) for bn, p in ((4, 1), (4, 2), (8, 1))]
    rows = {}
    for name, (n, k, fusion) in shapes.items():
        copies = rotation_count(n * k * 2, limit=8)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.float16, device="cuda")
        g = torch.rand(k, dtype=torch.float16, device="cuda") + 0.5
        out = torch.zeros(1, n // 2 if fusion.get("activation") else n, dtype=torch.float16, device="cuda")
        kw = dict(norm_weight=g, activation=fusion.get("activation"))
        for label, setting in grid:
            if setting and setting[0] == 8 and "activation" in fusion:
                continue  # out of shared memory (run25)
            gemv_module.PERSISTENT_ROW = setting is not None
            if setting:
                gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES = setting
            calls = [lambda w=w: gemv(x, w, out=out, **kw) for w in weights]
            us = time_graph_ms(kernel_bench._rotating(calls), copies)["ms"] * 1e3
            rows.setdefault(label, {})[name] = us
            log(f"row {name:8s} {label:16s}: {us:7.2f} us ({n * k * 2 / bw / us * 1e6:.0%})")
        del weights
        results["row_grid"] = rows
        save()
    step_us = {label: sum(weight_of[s] * t for s, t in r.items()) for label, r in rows.items() if len(r) == len(shapes)}
    log("row: per-step time of the norm launches (qkv, gate_up, lm_head): "
        + ", ".join(f"{label} {us:.0f} us" for label, us in step_us.items()))
    results["row_step_us"] = step_us
    gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES = defaults
    release()
    engine_alternated("row", {f"persistent={on}": lambda on=on: setattr(gemv_module, "PERSISTENT_ROW", on)
                              for on in (False, True)})
    gemv_module.PERSISTENT_ROW = persistent_default

if "stages" in parts:
    # The persistent one-row GEMV at deeper pipelines (3-5 stages: more weight bytes in flight per SM) and tile rows
    # 2-8, for the launches with an RMSNorm prologue and for bare ones (PERSISTENT_ROW_PLAIN), beside the tiled
    # launch and cuBLAS, in turns; then the engine with the best norm-launch setting (and bare launches through the
    # row kernel too, where that setting beat the tiled O launch) against the defaults, alternated twice
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    defaults = gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES
    smem_limit = 220 * 1024
    shapes = {"qkv+norm": (6144, 4096, dict(norm=True)),
              "gate_up+norm+silu": (28672, 4096, dict(norm=True, activation="silu_mul")),
              "o": (4096, 4096, {}), "6144 bare": (6144, 4096, {}), "14336 bare": (14336, 4096, {}),
              "28672 bare": (28672, 4096, {})}
    settings = [(bn, p, st) for bn in (2, 4, 8) for p in (1, 2) for st in (3, 4, 5)]
    rows = results["stages_grid"] = {}
    for name, (n, k, fusion) in shapes.items():
        copies = rotation_count(n * k * 2, limit=8)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        x = torch.randn(1, k, dtype=torch.float16, device="cuda")
        g = torch.rand(k, dtype=torch.float16, device="cuda") + 0.5
        silu = "activation" in fusion
        out = torch.zeros(1, n // 2 if silu else n, dtype=torch.float16, device="cuda")
        kw = dict(norm_weight=g if fusion.get("norm") else None, activation=fusion.get("activation"))

        def launches(setting):
            def run():
                for w in weights:
                    if setting is None:
                        gemv_module.PERSISTENT_ROW = gemv_module.PERSISTENT_ROW_PLAIN = False
                    else:
                        gemv_module.PERSISTENT_ROW = gemv_module.PERSISTENT_ROW_PLAIN = True
                        gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES = setting
                    gemv(x, w, out=out, **kw)
            return run
        fns = {"tiled": launches(None)}
        for bn, p, st in settings:
            smem = bn * k * 2 * (2 if silu else 1) * (st - 1)
            if smem * p <= smem_limit:
                fns[f"row bn{bn} p{p} s{st}"] = launches((bn, p, st))
        if not fusion:
            fns["cublas"] = lambda: [torch.mm(x, w.t(), out=out) for w in weights]
        timed = time_graphs_side_by_side_ms(fns, copies, repeats=10)
        rows[name] = {label: t["ms"] * 1e3 for label, t in timed.items()}
        best = min(rows[name], key=rows[name].get)
        log(f"stages {name}: " + ", ".join(f"{label} {us:.2f}" for label, us in sorted(rows[name].items(),
                                                                                      key=lambda kv: kv[1])[:6])
            + f" | tiled {rows[name]['tiled']:.2f}" + (f", cublas {rows[name]['cublas']:.2f}" if not fusion else "")
            + f" | best {best} at {n * k * 2 / bw / rows[name][best] * 1e6:.0%}")
        save()
        del weights
    gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES = defaults
    gemv_module.PERSISTENT_ROW, gemv_module.PERSISTENT_ROW_PLAIN = True, False
    release()
    # one setting serves every norm launch: the best by per-step time (32 QKV and 32 gate/up launches)
    common = [label for label in rows["qkv+norm"] if label.startswith("row") and label in rows["gate_up+norm+silu"]]
    best_norm = min(common, key=lambda label: rows["qkv+norm"][label] + rows["gate_up+norm+silu"][label])

    def parse(label):  # "row bn2 p2 s3" -> (2, 2, 3)
        return tuple(int(part[2:] if part.startswith("bn") else part[1:]) for part in label.split()[1:])

    results["stages_best_norm"] = best_norm
    log(f"stages: best norm setting {best_norm}")

    def put(setting, plain=False):
        def run():
            gemv_module.ROW_BLOCK_N, gemv_module.ROW_PROGRAMS_PER_SM, gemv_module.ROW_STAGES = setting
            gemv_module.PERSISTENT_ROW_PLAIN = plain
        return run
    variants = {"defaults": put(defaults), best_norm: put(parse(best_norm))}
    best_o = min((label for label in rows["o"] if label.startswith("row")), key=rows["o"].get)
    if rows["o"][best_o] < 0.98 * rows["o"]["tiled"] and parse(best_o) == parse(best_norm):
        variants[f"{best_norm} + plain rows"] = put(parse(best_norm), plain=True)
    engine_alternated("stages", variants, cache_lens=(512, 2048))
    put(defaults)()

if "residual" in parts:
    # The row kernel's residual read one tile ahead, and one-row launches without a prologue through it
    # (PERSISTENT_ROW_PLAIN): run36 had bare launches faster through it but the engine, whose O launch adds the
    # residual, slower. Error with it on; O with and without its residual, tiled and row, in turns; the engine A/B
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    gemv_module.PERSISTENT_ROW_PLAIN = True
    checks = fused_gemv_checks((1,))
    bad = [c for c in checks if not c["ok"]]
    results["residual_check"] = {"cases": len(checks), "failed": bad}
    log(f"row GEMV with plain rows: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; failed {bad}")
    n = k = 4096
    copies = rotation_count(n * k * 2, limit=8)
    weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.float16, device="cuda")
    out = torch.zeros(1, n, dtype=torch.float16, device="cuda")

    def o_launches(plain, residual):
        def run():
            gemv_module.PERSISTENT_ROW_PLAIN = plain
            for w in weights:
                gemv(x, w, out=out, residual=out if residual else None)
        return run
    timed = time_graphs_side_by_side_ms({f"{'row' if plain else 'tiled'}{' +residual' if residual else ''}":
                                         o_launches(plain, residual) for plain in (False, True)
                                         for residual in (False, True)}, copies, repeats=20)
    results["residual_o_us"] = {label: t["ms"] * 1e3 for label, t in timed.items()}
    log("residual: O 4096x4096 (us)", results["residual_o_us"])
    del weights
    release()
    engine_alternated("residual", {f"plain rows {on}": lambda on=on: setattr(gemv_module, "PERSISTENT_ROW_PLAIN", on)
                                   for on in (False, True)}, cache_lens=(512, 2048))
    gemv_module.PERSISTENT_ROW_PLAIN = False

if "prenorm" in parts:
    # NORM_BEFORE_BATCH (ops.rms_norm, then the plain batch_config launch) against the autotuned RMSNorm prologue
    # at 2-16 rows: error, the engine's norm launches in turns, then the engine's batch sweep alternated twice
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    norm_before_batch = gemv_module.NORM_BEFORE_BATCH
    gemv_module.NORM_BEFORE_BATCH = True
    checks = fused_gemv_checks((2, 4, 8))
    bad = [c for c in checks if not c["ok"]]
    results["prenorm_check"] = {"cases": len(checks), "failed": bad}
    log(f"norm before the batch launch: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; {bad}")
    shapes = {"qkv": (6144, 4096, None), "gate_up": (28672, 4096, "silu_mul"), "lm_head": (128256, 4096, None)}
    rows = results["prenorm_gemv_us"] = []
    for name, (n, k, activation) in shapes.items():
        copies = rotation_count(n * k * 2, limit=8)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        g = torch.rand(k, dtype=torch.float16, device="cuda") + 0.5
        for m in (2, 4, 8, 16):
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            out = torch.empty(m, n // 2 if activation else n, dtype=torch.float16, device="cuda")

            def launches(on):
                def run():
                    gemv_module.NORM_BEFORE_BATCH = on
                    for w in weights:
                        gemv(x, w, norm_weight=g, activation=activation, out=out)
                return run
            for on in (False, True):
                launches(on)()  # autotune (the prologue) and compile outside the capture
            timed = time_graphs_side_by_side_ms({"prologue": launches(False), "norm first": launches(True)}, copies)
            rows.append({"shape": name, "M": m, **{label: t["ms"] * 1e3 for label, t in timed.items()}})
            log("prenorm", rows[-1])
        del weights
        save()
    release()
    batch_sweep_alternated("prenorm", {f"norm first {on}": lambda on=on: setattr(gemv_module, "NORM_BEFORE_BATCH", on)
                                       for on in (False, True)}, (1, 4, 8, 16, 32))
    gemv_module.NORM_BEFORE_BATCH = norm_before_batch

if "warps" in parts:
    # The decode split kernel's warps and pipeline stages (DECODE_NUM_WARPS, DECODE_NUM_STAGES), never swept, where
    # the misses are: 32K at batch 1 (81-83% of the copy rate) and 4K at batch 8 (a tie with SDPA), in graphs over
    # rotated caches at a few split counts; then the engine at 2048 and 32K with the best setting against the default
    import flashcore.decode as decode_module
    defaults = decode_module.DECODE_NUM_WARPS, decode_module.DECODE_NUM_STAGES
    grid = results["warps_grid"] = []
    for warps, stages in ((4, 3), (4, 2), (4, 4), (8, 2), (8, 3), (8, 4)):
        decode_module.DECODE_NUM_WARPS, decode_module.DECODE_NUM_STAGES = warps, stages
        for batch, cache_len, splits_options in ((1, 32768, (33, 48, 64)), (8, 4096, (4, 6, 8))):
            for r in kernel_bench.decode_tuning_rows(cache_len, bw, splits_options, batch=batch):
                grid.append(dict(r, warps=warps, stages=stages))
                log(f"warps {warps} stages {stages} B{batch} {cache_len:6d} splits {r['splits']:2d}: "
                    f"{r['graph_us']:7.2f} us ({r['bandwidth_fraction']:.0%})")
        save()
    fastest = min((r for r in grid if r["cache_len"] == 32768), key=lambda r: r["graph_us"])
    best = results["warps_best_32k"] = (fastest["warps"], fastest["stages"])
    release()

    def use_launch(warps, stages):
        decode_module.DECODE_NUM_WARPS, decode_module.DECODE_NUM_STAGES = warps, stages
    engine_alternated("warps", {f"{w} warps {st} stages": lambda w=w, st=st: use_launch(w, st)
                                for w, st in dict.fromkeys((defaults, best))}, cache_lens=(2048, 32768))
    decode_module.DECODE_NUM_WARPS, decode_module.DECODE_NUM_STAGES = defaults

if "rows" in parts:
    # 2-8 rows through the persistent row kernel (PERSISTENT_ROWS) against batch_config's tensor-core launch (norms
    # first, NORM_BEFORE_BATCH) and cuBLAS: error, a grid of (tile rows, programs an SM, warps) per row count over the
    # engine's shapes, in turns; then the engine's batch sweep with each row count's best setting, alternated twice
    defaults = gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX, dict(gemv_module.ROWS_LAUNCH)
    gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX = True, 8
    checks = fused_gemv_checks((2, 3, 4, 8))
    bad = [c for c in checks if not c["ok"]]
    results["rows_check"] = {"cases": len(checks), "failed": bad}
    log(f"rows: {len(checks) - len(bad)}/{len(checks)} within 2x F.linear's error; {bad}")
    shapes = {"1024 bare": (1024, 4096, {}), "o bare": (4096, 4096, {}), "6144 bare": (6144, 4096, {}),
              "28672 bare": (28672, 4096, {}), "qkv+norm": (6144, 4096, dict(norm=True)),
              "gate_up+norm+silu": (28672, 4096, dict(norm=True, activation="silu_mul"))}
    grid = results["rows_grid"] = row_kernel_grid(
        "rows", shapes, (2, 4, 8), lambda m: [(bn, p, 3, warps) for bn in (1, 2) for p in (1, 2)
                                              for warps in ((4, 8) if m < 8 else (8, 16))], repeats=5)
    release()

    def parse(label):  # "row bn2 p1 w8" -> (2, 1, 3, 8)
        bn, p, w = (int(part[2:] if part.startswith("bn") else part[1:]) for part in label.split()[1:])
        return bn, p, 3, w
    best_launch = {}
    for m in (2, 4, 8):
        cells = [r["us"] for r in grid if r["M"] == m]
        labels = [label for label in cells[0] if label.startswith("row") and all(label in c for c in cells)]
        best_launch[m] = parse(min(labels, key=lambda label: sum(c[label] for c in cells)))
    results["rows_best"] = {str(m): v for m, v in best_launch.items()}
    log("rows best settings", best_launch)
    gemv_module.ROWS_LAUNCH.update(best_launch)
    batch_sweep_alternated("rows", {f"row kernel {on}": lambda on=on: setattr(gemv_module, "PERSISTENT_ROWS", on)
                                    for on in (False, True)}, (1, 2, 4, 8))
    gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX, gemv_module.ROWS_LAUNCH = defaults

if "rows2" in parts:
    # Two rows shape by shape: every bare GEMV of notebook 04's table with K up to 4096 and the engine's fused
    # launches, the row kernel at its setting and two neighbours against batch_config's launch and cuBLAS (at
    # acff090 the bare wide shapes ran slower through the row kernel than batch_config had)
    defaults = gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX, dict(gemv_module.ROWS_LAUNCH)
    gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX = True, 2
    shapes = {f"{n}x{k} bare": (n, k, {}) for n, k in ((1024, 4096), (4096, 4096), (6144, 4096), (14336, 4096),
                                                         (28672, 4096), (128256, 4096))}
    shapes.update({"qkv+norm": (6144, 4096, dict(norm=True)), "o+residual": (4096, 4096, dict(residual=True)),
                   "gate_up+norm+silu": (28672, 4096, dict(norm=True, activation="silu_mul")),
                   "lm_head+norm": (128256, 4096, dict(norm=True))})
    results["rows2_grid"] = row_kernel_grid("rows2", shapes, (2,), lambda m: [(2, 2, 3, 4), (2, 2, 3, 8),
                                                                              (1, 2, 3, 4)], repeats=10)
    gemv_module.PERSISTENT_ROWS, gemv_module.ROWS_MAX, gemv_module.ROWS_LAUNCH = defaults
    release()

if "bstages" in parts:
    # batch_config's launch at 4 and 8 rows against explicit configs: pipeline stages (never swept: run21 swept
    # blocks, splits and warps at Triton's default 3 stages), 128-256-wide K blocks, 16-128-wide column blocks and
    # the splits of K the kernel allows, with cuBLAS beside; graphs over rotated weights, in turns (at acff090
    # 6144x4096 and 28672x4096 ran 1.5-3.5% behind cuBLAS at M = 4 and 8, and 1024x4096 at M = 8 1.46x its M = 1)
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    grid = results["bstages_grid"] = []
    for n, k in ((1024, 4096), (4096, 4096), (6144, 4096), (14336, 4096), (28672, 4096)):
        copies = rotation_count(n * k * 2, limit=8)
        weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
        default = gemv_module.batch_config(n, k, sms).kwargs
        configs = [(bn, bk, split, 4, stages) for bn in (16, 32, 64, 128) for bk in (128, 256) for stages in (3, 4, 5)
                   for split in (1, 2, 4)
                   if bn * bk * 2 * (stages - 1) <= 200 * 1024 and (split == 1 or (n <= 16384 and k >= split * bk * 2))
                   and sms <= triton.cdiv(n, bn) * split <= 8 * sms]
        for m in (4, 8):
            x = torch.randn(m, k, dtype=torch.float16, device="cuda")
            out = torch.zeros(m, n, dtype=torch.float16, device="cuda")
            fns = {"batch": lambda x=x, out=out: [gemv(x, w, out=out) for w in weights],
                   "cublas": lambda x=x, out=out: [torch.mm(x, w.t(), out=out) for w in weights]}
            for config in configs:
                fns[str(config)] = lambda x=x, out=out, c=config: [gemv(x, w, out=out, config=c) for w in weights]
            for fn in fns.values():
                fn()  # compile outside the capture
            timed = time_graphs_side_by_side_ms(fns, copies, repeats=7)
            us = {launch: t["ms"] * 1e3 for launch, t in timed.items()}
            grid.append({"shape": f"{n}x{k}", "M": m, "default": default, "us": us})
            ranked = sorted(us.items(), key=lambda kv: kv[1])
            log(f"bstages {n}x{k} M{m}: " + ", ".join(f"{c} {t:.2f}" for c, t in ranked[:5])
                + f" | batch {us['batch']:.2f} ({default}), cublas {us['cublas']:.2f}")
            save()
        del weights
        release()

if "rows2_engine" in parts:
    # The engine's batch-2 step under row_launch's run41 dispatch (wide weights and residuals to batch_config)
    # against acff090's (every two-row launch with K up to 4096 through the row kernel), alternated twice; then
    # notebook 04's GEMV rows at M = 2 under the new dispatch
    new_dispatch = gemv_module.row_launch

    def acff090_dispatch(rows, weight_rows, k, sixteen_bit, has_norm, has_residual):
        return new_dispatch(rows, 0, k, sixteen_bit, has_norm, False)
    batch_sweep_alternated("rows2", {name: lambda d=dispatch: setattr(gemv_module, "row_launch", d)
                                     for name, dispatch in (("acff090", acff090_dispatch), ("run41", new_dispatch))},
                           (1, 2))
    gemv_module.row_launch = new_dispatch
    results["rows2_gemv"] = kernel_bench.gemv_rows(bw, rows_m=(2,))
    for r in results["rows2_gemv"]:
        log(f"gemv {r['shape']:>12s} M=2: {r['flashcore_us']:7.2f} us ({r['bandwidth_fraction']:.0%}) "
            f"cublas {r['cublas_us']:7.2f} us")
    save()

if "chunked" in parts:
    # The persistent chunked row kernel (PERSISTENT_ROW_CHUNKED: one row, K in chunks, (tile, chunk) pairs in one
    # pipelined loop) on the down projection against streaming_config's tiled launch: error, a small grid of
    # (BLOCK_N, BLOCK_K, programs an SM, stages) bare and with its residual in place, cuBLAS beside; then the engine A/B
    from integration.timing import rotation_count, time_graphs_side_by_side_ms
    defaults = gemv_module.PERSISTENT_ROW_CHUNKED, gemv_module.ROW_CHUNKED_LAUNCH
    gemv_module.PERSISTENT_ROW_CHUNKED = True
    checks = []
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(1, 14336, device="cuda", dtype=dtype)
        w = torch.randn(4096, 14336, device="cuda", dtype=dtype) * 0.02
        r = torch.randn(1, 4096, device="cuda", dtype=dtype)
        ref = x.double() @ w.double().T
        cases = (("plain", gemv(x, w), F.linear(x, w), ref),
                 ("residual", gemv(x, w, residual=r), r + F.linear(x, w), ref + r.double()))
        for name, ours, theirs, expected in cases:
            err = (ours.double() - expected).abs().max().item()
            torch_err = (theirs.double() - expected).abs().max().item()
            checks.append({"dtype": str(dtype), "fusion": name, "err": err, "torch_err": torch_err,
                           "ok": within_rule(err, torch_err)})
    results["chunked_check"] = checks
    log(f"chunked check: {sum(c['ok'] for c in checks)}/{len(checks)} within 2x F.linear's error; {checks}")
    n, k = 4096, 14336
    copies = rotation_count(n * k * 2, limit=8)
    weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.float16, device="cuda")
    out = torch.zeros(1, n, dtype=torch.float16, device="cuda")
    settings = [(bn, bk, p, 3, 4) for bn, bk in ((2, 2048), (4, 2048), (4, 1024), (8, 1024)) for p in (1, 2)]
    settings += [(4, 2048, 2, 4, 4), (8, 1024, 2, 4, 4)]
    settings += [(8, 2048, 2, 3, 4), (16, 1024, 2, 3, 4), (8, 2048, 2, 4, 4)]  # 32 KB tiles (after run44)
    grid = results["chunked_grid"] = []
    for residual in (False, True):
        def launches(setting, residual=residual):
            def run():
                gemv_module.PERSISTENT_ROW_CHUNKED = setting is not None
                if setting is not None:
                    gemv_module.ROW_CHUNKED_LAUNCH = setting
                for w in weights:
                    gemv(x, w, out=out, residual=out if residual else None)
            return run
        fns = {"tiled": launches(None), **{str(setting): launches(setting) for setting in settings}}
        if not residual:
            fns["cublas"] = lambda: [torch.mm(x, w.t(), out=out) for w in weights]
        for fn in fns.values():
            fn()
        timed = time_graphs_side_by_side_ms(fns, copies, repeats=10)
        us = {launch: t["ms"] * 1e3 for launch, t in timed.items()}
        grid.append({"residual": residual, "us": us})
        ranked = sorted(us.items(), key=lambda kv: kv[1])
        log(f"chunked down residual={residual}: " + ", ".join(f"{c} {t:.2f}" for c, t in ranked[:5])
            + f" | tiled {us['tiled']:.2f}" + (f", cublas {us['cublas']:.2f}" if not residual else "")
            + f" | best at {n * k * 2 / bw / ranked[0][1] * 1e6:.0%}")
        save()
    del weights
    release()
    cells = [g["us"] for g in grid]
    best = min((s for s in map(str, settings) if all(s in c for c in cells)), key=lambda s: sum(c[s] for c in cells))
    best = next(setting for setting in settings if str(setting) == best)
    results["chunked_best"] = best
    log("chunked best", best)

    def chunked_on():
        gemv_module.PERSISTENT_ROW_CHUNKED, gemv_module.ROW_CHUNKED_LAUNCH = True, best

    def chunked_off():
        gemv_module.PERSISTENT_ROW_CHUNKED = False
    engine_alternated("chunked", {"tiled": chunked_off, "chunked": chunked_on})
    gemv_module.PERSISTENT_ROW_CHUNKED, gemv_module.ROW_CHUNKED_LAUNCH = defaults

if "yardstick" in parts:
    # The floor's yardstick against the GPU's warm-up: copy_bandwidth as notebook 04 takes it (the first measurement
    # of a process), then again after each of five 1-second runs of copies, then with 200 copies timed (run43 and
    # run44, a minute apart on one machine, read 4.05 and 4.20 TB/s)
    from integration.timing import copy_bandwidth
    readings = results["yardstick"] = {"first": bw / 1e12, "after_warm_up": [], "long": []}
    src = torch.empty(2 ** 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(5):
        until = time.time() + 1.0
        while time.time() < until:
            dst.copy_(src)
        torch.cuda.synchronize()
        readings["after_warm_up"].append(copy_bandwidth() / 1e12)
        readings["long"].append(copy_bandwidth(repeats=200) / 1e12)
    del src, dst
    release()
    log(f"yardstick first {readings['first']:.3f} TB/s, after 1 s of copies "
        + ", ".join(f"{r:.3f}" for r in readings["after_warm_up"]) + "; 200 copies "
        + ", ".join(f"{r:.3f}" for r in readings["long"]))
    save()

if "pdl" in parts:
    # Programmatic dependent launch (flashcore._pdl) off against on (tests/test_pdl.py checks the bits): decode
    # attention in graphs over rotated caches and the projection chain, side by side in one timing; then the engine
    # A/B and its batch sweep. Run45 and run46 ran this part as fefc6aa and ca1fa52 have it, with early releases and
    # L2 prefetches before the wait; run10 (bf9283d) timed PDL on the tiled GEMVs of the time, many waves a launch:
    # slower.
    default = _pdl.ENABLED

    def pdl_setting(enabled):
        return module_setting(_pdl, "ENABLED", enabled)

    decode_attention_alternated("pdl", {"off": pdl_setting(False), "pdl": pdl_setting(True)},
                                ((1, 512), (1, 2048), (1, 8192), (1, 32768), (8, 4096)))
    chain_and_gemv_alternated("pdl", {"off": pdl_setting(False), "pdl": pdl_setting(True)})
    engine_alternated("pdl", {"off": pdl_setting(False), "pdl": pdl_setting(True)},
                      cache_lens=(512, 2048, 8192, 32768))
    batch_sweep_alternated("pdl", {"off": pdl_setting(False), "pdl": pdl_setting(True)}, (1, 2, 4, 8, 16, 32))
    _pdl.ENABLED = default

if "cap" in parts:
    # PDL's early release from the batch-1 kernels (flashcore._pdl.RELEASE_EARLY), each persistent GEMV held to
    # its programs per SM by the shared memory it asks for (_pdl.hold), against releases at exit: bits, then decode
    # attention, the projection chain, GEMV rows, the engine and its batch sweep. Run51 timed the hold as a patch in
    # this part (ecd666b's dev_probe), beside early releases without it.
    import ctypes
    libcuda = ctypes.CDLL("libcuda.so.1")
    default = _pdl.RELEASE_EARLY

    def release_setting(early):
        return module_setting(_pdl, "RELEASE_EARLY", early)
    variants = {"exit": release_setting(False), "early": release_setting(True)}

    # Bits: 24 greedy tokens of a 3-layer 8B-shaped model at batch 1 and 2, early against exit
    model = llama31_8b(dtype=torch.float16, num_layers=3)
    ids = torch.randint(0, 128000, (2, 40), generator=torch.Generator().manual_seed(0)).cuda()
    mask = torch.ones_like(ids)
    mask[1, :9] = 0
    outputs = {}
    for name in ("exit", "early", "exit", "early"):
        variants[name]()
        engine = FlashCoreEngine(model, max_batch_size=2, max_seq_len=128)
        for batch in (1, 2):
            tokens = engine.generate(ids[:batch], attention_mask=mask[:batch], max_new_tokens=24, eos_token_id=[])
            outputs.setdefault((name, batch), []).append(
                (tokens, engine.engine.program_for(batch).buffers.logits.clone()))
        del engine
    bitwise = all(torch.equal(t, outputs[("exit", b)][0][0]) and torch.equal(l, outputs[("exit", b)][0][1])
                  for (name, b), runs in outputs.items() for t, l in runs)
    results["cap_bitwise"] = bitwise
    log(f"cap engine tokens and logits bitwise the same released early and at exit: {bitwise}")
    for compiled, held_to in _pdl._HELD.items():
        fits = []
        for shared in (compiled.metadata.shared, compiled.packed_metadata[2]):
            count = ctypes.c_int()
            libcuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(
                ctypes.byref(count), ctypes.c_void_p(compiled.function),
                ctypes.c_int(compiled.metadata.num_warps * 32), ctypes.c_size_t(shared))
            fits.append(count.value)
        log(f"cap held {compiled.name} to {held_to}: {compiled.metadata.shared} B shared, {fits[0]} programs an SM; "
            f"asking {compiled.packed_metadata[2]} B, {fits[1]}")
    del model
    release()

    decode_attention_alternated("cap", variants, ((1, 512), (1, 2048), (1, 32768), (8, 4096)))
    chain_and_gemv_alternated("cap", variants, rows_m=(1, 2, 8))
    engine_alternated("cap", variants, cache_lens=(512, 2048, 8192, 32768))
    batch_sweep_alternated("cap", variants, (1, 2, 4, 8, 16, 32))
    _pdl.RELEASE_EARLY = default

if "prefetch" in parts:
    # Released early (batch 1), each persistent GEMV asks L2 for its first weight tiles (PREFETCH_TILES) while it
    # sits at its wait, against asking for nothing: the chain and GEMV rows over tile counts, then the engine. Run53
    # (bdbf330's part) also had decode's split kernel ask for its first key/value blocks (PREFETCH_KV_BLOCKS).
    default = _pdl.PREFETCH_TILES

    def prefetch_setting(tiles):
        return module_setting(_pdl, "PREFETCH_TILES", tiles)

    chain_and_gemv_alternated("prefetch", {f"w{t}": prefetch_setting(t) for t in (0, 1, 2, 4)}, rows_m=(1,))
    engine_alternated("prefetch", {f"w{t}": prefetch_setting(t) for t in (0, 1, 2)},
                      cache_lens=(512, 2048, 8192, 32768))
    _pdl.PREFETCH_TILES = default

if "capacity" in parts:
    # The engine's split count follows its max_seq_len: a user's engine sized for 128K runs 33 splits at every
    # cache length, where one sized to the cache runs 9 at 512 and 17 at 1024 (33 from 2K up). Splits take every
    # num_splits-th key block, so the extra ones at a short cache find none. Its step at 512 and 1024 against an
    # engine sized to each cache (as notebook 04 sizes them), the two alternated twice.
    from flashcore.decode import num_splits, sm_count
    model = llama31_8b(dtype=torch.float16)
    rows = results["capacity_engine"] = []
    for repeat in range(2):
        for cache_len in (512, 1024):
            for label, capacity in (("sized", cache_len + 38), ("128K", 131072 + 38)):
                engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=capacity)
                timing = bench.engine_timing(engine, cache_len)
                del engine
                release()
                splits = num_splits(1, 8, capacity, sm_count(torch.device("cuda")))
                rows.append(dict(timing, cache_len=cache_len, capacity=capacity, splits=splits, repeat=repeat))
                log(f"capacity rep {repeat} cache {cache_len:5d} engine {label:5s} ({splits:2d} splits): "
                    f"{timing['ms']:.4f} ms (p10 {timing['ms_p10']:.4f}, p90 {timing['ms_p90']:.4f})")
                save()
    del model
    release()

if "tiledearly" in parts:
    # batch_config's launches released right after their wait and held to the programs per SM they need
    # (gemv.TILED_RELEASE_EARLY, off until measured) against released at exit: bits of plain, residual and SiLU
    # launches, GEMV rows at 2 / 4 / 8 rows, the engine's batch sweep; alternated twice.
    default = gemv_module.TILED_RELEASE_EARLY

    def tiled_early(on):
        return module_setting(gemv_module, "TILED_RELEASE_EARLY", on)

    variants = {"exit": tiled_early(False), "early": tiled_early(True)}
    gemv_bitwise("tiledearly", variants, ((4096, 4096), (6144, 4096), (1024, 4096), (4096, 14336), (14336, 4096)),
                 (2, 4, 8, 16))
    chain_and_gemv_alternated("tiledearly", variants, rows_m=(2, 4, 8))
    batch_sweep_alternated("tiledearly", variants, (1, 2, 4, 8, 16, 32))
    tiled_early(default)()

if "early2" in parts:
    # Every one-wave kernel of the batch-2 step released early and held (_pdl.EARLY_MAX_BATCH 2: the 2-row
    # persistent GEMVs, decode attention, the tiled O and down launches), and the tiled launches that release early
    # asking L2 for their first weight tile at their wait (gemv.TILED_PREFETCH_MAX_ROWS; run64 ran it as an on/off
    # switch, at 0732d86), against neither: bits of GEMV launches at 2 / 4 / 8 rows, then GEMV rows at 1 / 2 / 8
    # rows and the batch sweep, alternated twice.
    defaults = _pdl.EARLY_MAX_BATCH, gemv_module.TILED_PREFETCH_MAX_ROWS

    def early2(max_batch, prefetch_rows):
        return lambda: (setattr(_pdl, "EARLY_MAX_BATCH", max_batch),
                        setattr(gemv_module, "TILED_PREFETCH_MAX_ROWS", prefetch_rows))

    variants = {"base": early2(1, 0), "b2": early2(2, 0), "pf": early2(1, 32), "b2pf": early2(2, 32)}
    gemv_bitwise("early2", variants, ((4096, 4096), (6144, 4096), (4096, 14336), (14336, 4096)), (2, 4, 8))
    chain_and_gemv_alternated("early2", variants, rows_m=(1, 2, 8))
    batch_sweep_alternated("early2", variants, (1, 2, 4, 8, 16, 32))
    early2(*defaults)()


def residual_error(n, k, m, **labels):
    """One GEMV with a residual (y = r + x W^T) on random fp16 inputs against float64, beside F.linear's own error:
    a row for the results, `ok` by flashcore's ratio rule."""
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
    r = torch.randn(m, n, device="cuda", dtype=torch.float16)
    ref = r.double() + x.double() @ w.double().T
    err = (gemv(x, w, residual=r).double() - ref).abs().max().item()
    torch_err = ((r + F.linear(x, w)).double() - ref).abs().max().item()
    return dict(labels, shape=f"{n}x{k}", M=m, err=err, torch_err=torch_err, ok=within_rule(err, torch_err))


def tiled_launches(overrides, tiles=None, max_rows=None):
    """A variant for the *_alternated helpers: batch_config's tiled launches of 3+ 16-bit rows (up to max_rows)
    without a norm, released early, at other settings, (N, K) -> (BLOCK_N, BLOCK_K, SPLIT_K, stages), each held to
    the programs an SM its grid needs; `tiles`: _pdl.PREFETCH_TILES (None: the shipped one). Every other launch is
    the shipped one."""
    def tiled_early_launch(rows, n, k, sixteen_bit, has_norm, sms):
        if (n, k) in overrides and 3 <= rows <= (max_rows or rows) and sixteen_bit and not has_norm:
            block_n, block_k, split_k, stages = overrides[(n, k)]
            config = triton.Config({"BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split_k}, num_warps=4,
                                   num_stages=stages)
            return config, triton.cdiv(triton.cdiv(n, block_n) * split_k, sms)
        return SHIPPED_TILED_EARLY_LAUNCH(rows, n, k, sixteen_bit, has_norm, sms)
    return lambda: (setattr(gemv_module, "tiled_early_launch", tiled_early_launch),
                    setattr(_pdl, "PREFETCH_TILES", SHIPPED_PREFETCH_TILES if tiles is None else tiles))


# what tiled_launches replaces
SHIPPED_TILED_EARLY_LAUNCH, SHIPPED_PREFETCH_TILES = gemv_module.tiled_early_launch, _pdl.PREFETCH_TILES


if "tiledgrid" in parts:
    # batch_config's launches at other blocks, stages and prefetch depths, released early and held to the programs an
    # SM their grid needs: 28672x4096 bare (448 programs of 64 columns, which fit 3 an SM: 1.13 waves, released at
    # exit; behind cuBLAS at M = 4 / 8 in the report at 54e1456) at 128-wide blocks (224 programs, 2 an SM) or held
    # to 4 an SM at 3 or 2 stages; 4096x4096 (M = 8 1.152x its M = 1 time there) at 32-wide blocks (512 programs, 4 an
    # SM), 4 stages, or 256-deep tiles at 2 stages; 1024x4096 (1.45x) at 256-deep 16-wide tiles; two prefetched tiles
    # (every tiled launch released early). Error against float64 (with a residual), GEMV rows at M = 4 / 8 beside
    # cuBLAS, the batch sweep where the variant reaches the engine's launches; alternated twice.
    # Shared memory a program of these asks for (.ci/gpu/sm90_tiled_shared.py, which counts registers too): 40 KB at
    # 64x128 tiles and 3 stages (5 fit an SM), 61 KB at 4 stages (3), 74 KB at 128x128 and 3 stages (3), 24 KB at
    # 16x128 and 4 stages (9); held to 4 an SM, each asks for 45.7 KB.
    variants = {"base": tiled_launches({}), "gu128": tiled_launches({(28672, 4096): (128, 128, 1, 3)}),
                "gu4sm": tiled_launches({(28672, 4096): (64, 128, 1, 3)}),
                "gu64s2": tiled_launches({(28672, 4096): (64, 128, 1, 2)}),
                "o32": tiled_launches({(4096, 4096): (32, 128, 4, 3)}),
                "o64s4": tiled_launches({(4096, 4096): (64, 128, 4, 4)}),
                "o64k256": tiled_launches({(4096, 4096): (64, 256, 4, 2)}),
                "kv16k256": tiled_launches({(1024, 4096): (16, 256, 4, 3)}), "pf2": tiled_launches({}, tiles=2)}
    checks = results["tiledgrid_error"] = []
    for name, put_in_place in variants.items():
        put_in_place()
        checks += [residual_error(n, k, m, variant=name)
                   for n, k in ((28672, 4096), (4096, 4096), (1024, 4096)) for m in (4, 8)]
    log(f"tiledgrid {sum(c['ok'] for c in checks)}/{len(checks)} residual launches within 2x F.linear's error")
    gemv_rows_alternated("tiledgrid", variants, ((4096, 4096), (28672, 4096), (1024, 4096), (6144, 4096),
                                                 (14336, 4096), (4096, 14336)), (4, 8))
    engine_variants = {name: variants[name] for name in ("base", "o32", "o64s4", "o64k256", "pf2")}
    batch_sweep_alternated("tiledgrid", engine_variants, (4, 8, 16, 32))
    tiled_launches({})()

if "splitk" in parts:
    # The M = 8 / M = 1 misses (4096x4096 1.172x, 6144x4096 1.161x at 7137894): the tiled launch splits K in 4 (2),
    # and the last slice of each column block to arrive reads the others' partials back from L2 and sums them, a
    # serial tail the one-row kernel (all of K a program) does not have. K unsplit at 16-wide blocks (256 / 384
    # programs, 2 / 3 an SM) with 128- to 512-deep tiles, or split in 2, up to 8 rows; the shipped launch beside them.
    # Error against float64 with a residual, GEMV rows at M = 1 / 4 / 8 beside cuBLAS, then the engine's batch 4 and
    # 8 steps (its O and QKV launches), alternated twice.
    variants = {"base": tiled_launches({})}
    for name, setting in (("n16k256s4", (16, 256, 1, 4)), ("n16k512s3", (16, 512, 1, 3)),
                          ("n16k128s6", (16, 128, 1, 6)), ("n32k256split2", (32, 256, 2, 3))):
        variants[name] = tiled_launches({(4096, 4096): setting, (6144, 4096): setting}, max_rows=8)
    checks = results["splitk_error"] = []
    for name, put_in_place in variants.items():
        put_in_place()
        checks += [residual_error(n, k, 8, variant=name) for n, k in ((4096, 4096), (6144, 4096))]
    log(f"splitk {sum(c['ok'] for c in checks)}/{len(checks)} residual launches within 2x F.linear's error")
    save()
    gemv_rows_alternated("splitk", variants, ((4096, 4096), (6144, 4096)), (1, 4, 8))
    batch_sweep_alternated("splitk", variants, (4, 8))
    tiled_launches({})()

if "overlap" in parts:
    # What the M = 8 / M = 1 ratio is made of (run68: neither an unsplit K nor a 2-way split brings 4096x4096 M = 8
    # under 1.15x M = 1). Alone and cold (Nsight Compute, run59) M = 8 costs what M = 1 does; back to back in a
    # graph each launch overlaps its neighbours through PDL. GEMV rows with PDL off (each launch starts when the
    # previous one has ended), on but released at exit, and as shipped (released at the wait, held, first tile
    # asked of L2), alternated twice.
    default_enabled, default_early = _pdl.ENABLED, _pdl.RELEASE_EARLY

    def pdl_variant(enabled, early):
        return lambda: (setattr(_pdl, "ENABLED", enabled), setattr(_pdl, "RELEASE_EARLY", early))

    variants = {"off": pdl_variant(False, False), "exit": pdl_variant(True, False),
                "shipped": pdl_variant(default_enabled, default_early)}
    gemv_rows_alternated("overlap", variants, ((4096, 4096), (6144, 4096)), (1, 2, 4, 8))
    _pdl.ENABLED, _pdl.RELEASE_EARLY = default_enabled, default_early

if "python" in parts:
    # Decode attention from Python as notebook 04 now times it (back-to-back calls over rotated caches) beside
    # do_bench's median (an L2 flush before each call, which hides a host cost shorter than the flush)
    rows = kernel_bench.decode_attention_rows((512, 2048, 8192, 32768, 131072), bw)
    rows += kernel_bench.decode_attention_rows((4096,), bw, batches=(8,))
    for r in rows:
        q = torch.randn(r["batch"], 32, 1, 128, dtype=torch.float16, device="cuda")
        k = torch.randn(r["batch"], 8, r["cache_len"], 128, dtype=torch.float16, device="cuda")
        v = torch.randn_like(k)
        lens = torch.full((r["batch"],), r["cache_len"], dtype=torch.int32, device="cuda")
        r["flashcore_do_bench_us"] = kernel_bench._median_us(lambda: decode_attention(q, k, v, kv_lens=lens))
        r["sdpa_do_bench_us"] = kernel_bench._median_us(
            lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        log(f"python B={r['batch']} {r['cache_len']:6d} splits {r['python_splits']}/{r['splits']}: back to back "
            f"{r['flashcore_us']:6.1f} us (sdpa {r['sdpa_gqa_us']:6.1f}, repeat_kv {r['sdpa_repeat_kv_us']:6.1f}) | "
            f"do_bench {r['flashcore_do_bench_us']:6.1f} (sdpa {r['sdpa_do_bench_us']:6.1f}) | "
            f"graph {r['flashcore_graph_us']:6.1f} (sdpa {r['sdpa_graph_us']:6.1f})")
        del k, v
    results["python_rows"] = rows
    save()
    release()

if "plan_host" in parts:
    # The host path of a planned decode_attention call against the previous commit's (its decode.py carried as
    # .probe/decode_before.py): a tight loop over one cache (timeit), alternated twice, beside SDPA
    import timeit
    decode_before = load_carried("decode_before", ".probe/decode_before.py")
    host = []
    for batch, cache_len in ((1, 512), (1, 4096), (8, 4096)):
        q = torch.randn(batch, 32, 1, 128, dtype=torch.float16, device="cuda")
        k = torch.randn(batch, 8, cache_len, 128, dtype=torch.float16, device="cuda")
        v = torch.randn_like(k)
        lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
        calls = {"now": lambda: decode_attention(q, k, v, kv_lens=lens),
                 "before": lambda: decode_before.decode_attention(q, k, v, kv_lens=lens),
                 "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)}
        with torch.no_grad():
            assert torch.equal(calls["now"](), calls["before"]()) and torch.equal(calls["now"](), calls["before"]())
            for repeat in range(2):
                for name, fn in calls.items():
                    fn()
                    torch.cuda.synchronize()
                    us = timeit.timeit(fn, number=3000) / 3000 * 1e6
                    torch.cuda.synchronize()
                    host.append({"batch": batch, "cache_len": cache_len, "path": name, "repeat": repeat, "us": us})
                    log(f"host B={batch} cache {cache_len} rep {repeat} {name:6s}: {us:5.1f} us a call")
    results["host"] = host
    save()

if "single" in parts:
    # One split writes the output itself, with no merge launch: decode at short caches with one split against the
    # heuristic's count, in a graph and from Python (back to back over rotated caches, 32 and 256 calls a run, and
    # a tight loop over one cache), alternated twice; then the engine at 512 and 2048 with its split count capped.
    import timeit
    import flashcore.engine.step as step_module
    from flashcore.decode import num_splits, sm_count
    from integration.timing import rotation_count, time_python_ms
    sms = sm_count(torch.device("cuda"))
    grid = []
    for cache_len in (512, 1024, 2048, 4096):
        for r in kernel_bench.decode_tuning_rows(cache_len, bw, sorted({1, 2, 4, 8, num_splits(1, 8, cache_len, sms)})):
            grid.append(r)
            log(f"single graph {cache_len:5d} splits {r['splits']:2d}: {r['graph_us']:6.2f} us")
    results["single_graph"] = grid
    save()
    python_rows = []
    for cache_len in (512, 1024, 2048):
        copies = rotation_count(2 * 8 * cache_len * 128 * 2, limit=8)
        keys = [torch.randn(1, 8, cache_len, 128, dtype=torch.float16, device="cuda") for _ in range(copies)]
        values = [torch.randn_like(k) for k in keys]
        q = torch.randn(1, 32, 1, 128, dtype=torch.float16, device="cuda")
        lens = torch.full((1,), cache_len, dtype=torch.int32, device="cuda")
        makers = {"default": lambda i: lambda: decode_attention(q, keys[i], values[i], kv_lens=lens),
                  "splits1": lambda i: lambda: decode_attention(q, keys[i], values[i], kv_lens=lens, splits=1),
                  "sdpa": lambda i: lambda: F.scaled_dot_product_attention(q, keys[i], values[i], enable_gqa=True)}
        with torch.no_grad():
            for repeat in range(2):
                for name, make in makers.items():
                    row = {"cache_len": cache_len, "path": name, "repeat": repeat}
                    for per_run in (32, 256):
                        calls = [make(i) for i in range(copies)] * (per_run // copies)
                        row[f"back_to_back_{per_run}_us"] = time_python_ms(kernel_bench._rotating(calls),
                                                                           len(calls))["ms"] * 1e3
                    fn = make(0)
                    fn()
                    torch.cuda.synchronize()
                    row["tight_loop_us"] = timeit.timeit(fn, number=3000) / 3000 * 1e6
                    torch.cuda.synchronize()
                    python_rows.append(row)
                    log(f"single python {cache_len:5d} {name:8s} rep {repeat}: back to back "
                        f"{row['back_to_back_32_us']:5.1f} (32 a run) {row['back_to_back_256_us']:5.1f} (256), "
                        f"tight loop {row['tight_loop_us']:5.1f} us")
        del keys, values
    results["single_python"] = python_rows
    save()
    release()
    heuristic = step_module.num_splits

    def cap_splits(cap):
        step_module.num_splits = heuristic if cap is None else (lambda *a: min(cap, heuristic(*a)))

    engine_alternated("single", {f"cap {cap}": lambda cap=cap: cap_splits(cap) for cap in (None, 1, 8)})
    step_module.num_splits = heuristic

if "flags" in parts:
    # Module settings that need no new code, measured on the H200 against the defaults: the V load beside the K
    # load in the decode split kernel (H100, session 3: within the spread), and the persistent row GEMV at 2-row
    # tiles (a shorter tail: QKV's 1536 tiles of 4 rows make 11.6 tiles a program) or 2 programs an SM. QKV (with
    # its RMSNorm) over rotated weights, then the engine at 512 and 2048, alternated twice.
    import flashcore.decode as decode_module
    from integration.timing import rotation_count, time_graph_ms
    settings = {"default": {}, "v-with-k": {(decode_module, "DECODE_LOAD_V_WITH_K"): True},
                "row bn2": {(gemv_module, "ROW_BLOCK_N"): 2}, "row p2": {(gemv_module, "ROW_PROGRAMS_PER_SM"): 2}}
    defaults = {key: getattr(*key) for changes in settings.values() for key in changes}

    def use(name):
        for (module, attr), value in defaults.items():
            setattr(module, attr, settings[name].get((module, attr), value))

    n, k = 6144, 4096
    copies = rotation_count(n * k * 2, limit=8)
    weights = [torch.randn(n, k, dtype=torch.float16, device="cuda") * 0.02 for _ in range(copies)]
    x = torch.randn(1, k, dtype=torch.float16, device="cuda")
    g = torch.rand(k, dtype=torch.float16, device="cuda") + 0.5
    out = torch.zeros(1, n, dtype=torch.float16, device="cuda")
    qkv = []
    for repeat in range(2):
        for name in ("default", "row bn2", "row p2"):
            use(name)
            calls = [lambda w=w: gemv(x, w, out=out, norm_weight=g) for w in weights]
            us = time_graph_ms(kernel_bench._rotating(calls), copies)["ms"] * 1e3
            qkv.append({"setting": name, "repeat": repeat, "us": us})
            log(f"flags qkv {name:8s} rep {repeat}: {us:6.2f} us ({n * k * 2 / bw / us * 1e6:.0%})")
    results["flags_qkv"] = qkv
    del weights
    release()
    engine_alternated("flags", {name: lambda name=name: use(name) for name in settings})
    use("default")

if "fuse" in parts:
    # RoPE and the cache append inside the decode split kernel (rope_decode_attention) against the two kernels it
    # replaces: bitwise on the 8B heads, then the engine alternated twice. (Run18 also timed an L2 prefetch of the
    # O projection's weights from the attention kernel: slower, not kept; the code is in 168cd51.)
    import flashcore.decode as decode_module
    import flashcore.engine.runner as runner_module
    import flashcore.engine.step as step_module
    from flashcore.ops.rope_append import rope_append

    mismatches, cases = [], 0
    for dtype, lens, start, cache, qkv, cos, sin, splits in rope_decode_cases():
        key, value = cache[0].clone(), cache[1].clone()
        q = torch.empty(4, 1, 32, 128, device="cuda", dtype=dtype)
        rope_append(qkv[:, None], cos, sin, key, value, lens - 1, q_out=q, kv_start=start)
        want = decode_attention(q.transpose(1, 2), key, value, kv_lens=lens, kv_start=start, splits=splits)
        key2, value2 = cache[0].clone(), cache[1].clone()
        got = decode_module.rope_decode_attention(qkv, cos, sin, key2, value2, kv_lens=lens, kv_start=start,
                                                  splits=splits)
        cases += 1
        if not (torch.equal(got, want) and torch.equal(key2, key) and torch.equal(value2, value)):
            mismatches.append(f"{dtype} splits {splits}: {(got.float() - want.float()).abs().max().item()}")
    results["fuse_check"] = {"cases": cases, "mismatches": mismatches}
    log(f"rope_decode_attention: {cases - len(mismatches)}/{cases} bitwise equal; {mismatches}")

    fused_step = step_module.decode_step

    def two_kernel_step(weights, state, b, projections="gemv"):
        """The step as published: rope_append into a query buffer, then decode_attention."""
        batch = b.tokens.shape[0]
        if not hasattr(b, "q"):
            b.q = torch.empty(batch, 1, weights.shape.q_heads, weights.shape.head_dim, dtype=weights.dtype,
                              device=weights.device)
        write_pos, kv_start = state.write_pos[:batch], state.kv_start[:batch]
        torch.index_select(weights.embed, 0, b.tokens, out=b.h)
        torch.add(write_pos, 1, out=b.kv_lens)
        eps = weights.shape.rms_eps
        for index, layer in enumerate(weights.layers):
            gemv(b.h, layer.qkv, norm_weight=layer.attn_norm, eps=eps, out=b.qkv)
            rope_append(b.qkv.view(batch, 1, -1), weights.rope_cos, weights.rope_sin, state.key[index],
                        state.value[index], write_pos, q_out=b.q, kv_start=kv_start)
            decode_attention(b.q.transpose(1, 2), state.key[index, :batch], state.value[index, :batch],
                             kv_lens=b.kv_lens, kv_start=kv_start, splits=b.splits, out=b.attn.transpose(1, 2),
                             workspace=b.workspace)
            gemv(b.attn.view(batch, -1), layer.o, residual=b.h, out=b.h)
            gemv(b.h, layer.gate_up, norm_weight=layer.mlp_norm, eps=eps, activation="silu_mul", out=b.act)
            gemv(b.act, layer.down, residual=b.h, out=b.h)
        step_module._norm_linear(b.h, weights.final_norm, weights.lm_head, eps, b.logits, True)
        write_pos.copy_(b.kv_lens)
        return b.logits

    variants = [("two kernels", two_kernel_step), ("fused", fused_step)]
    engine_alternated("fuse", {name: lambda fn=step_fn: setattr(runner_module, "decode_step", fn)
                               for name, step_fn in variants}, cache_lens=(512, 2048, 8192, 32768))
    runner_module.decode_step = fused_step
    # same tokens from every variant on the 8B shape, greedy (batch 1: its GEMV config is fixed, no autotuning;
    # the left-padded batch is in the kernel check above)
    small = llama31_8b(dtype=torch.float16, num_layers=4)
    ids = torch.randint(0, 128000, (1, 24), device="cuda")
    mask = torch.ones_like(ids)
    outs = {}
    for name, step_fn in variants:
        runner_module.decode_step = step_fn
        engine = FlashCoreEngine(small, max_batch_size=1, max_seq_len=128)
        outs[name] = engine.generate(ids, attention_mask=mask, max_new_tokens=40).tolist()
        del engine
    runner_module.decode_step = fused_step
    results["fuse_tokens_equal"] = {name: outs[name] == outs["two kernels"] for name in outs}
    log("same tokens as the two-kernel step:", results["fuse_tokens_equal"])
    save()
    del small
    release()

if "floor" in parts:
    # The engine (batch 1) at every cache length of notebook 04, then at 2048 once more
    model = llama31_8b(dtype=torch.float16)
    results["decode"] = bench.decode_sweep(model, [512, 1024, 2048, 4096, 8192, 32768, 131072, 2048], bw,
                                           ["flashcore-engine"], log=log)
    save()
    del model
    release()

if "ttft" in parts:
    from torch.profiler import ProfilerActivity, profile
    from integration.llama_flashcore import attention_implementation
    model = llama31_8b(dtype=torch.float16)
    results["ttft"] = bench.time_to_first_token(model, [2048, 8192, 32768])
    for r in results["ttft"]:
        log(f"ttft {r['prompt_len']:6d} {r['path']:18s}: {r['ms']:.1f} ms")
    save()
    ids = torch.randint(0, 128000, (1, 8192), device="cuda")
    engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=8200)
    profiles = {}
    for name, fn in (("engine", lambda: engine.generate(ids, max_new_tokens=1)),
                     ("hf-sdpa", lambda: model.generate(ids, max_new_tokens=1, do_sample=False))):
        with attention_implementation(model, "sdpa"):
            fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
        profiles[name] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60)
        log(name, profiles[name])
    results["prefill_profiles"] = profiles
    del engine, model
    release()
    save()

if "prefill_ops" in parts:
    # The prefill's fused RMSNorm (+ residual add) and SiLU·mul against the torch ops they replace at 8192 tokens of
    # the 8B shape (bits, then time in turns), then time to first token with this commit's prefill, the previous
    # commit's (torch ops, carried as .probe/step_before.py) and HF SDPA's, in turns
    from flashcore.engine import torch_rms_norm
    from flashcore.ops.rms_norm import rms_norm
    from flashcore.ops.silu_mul import silu_mul
    import flashcore.engine.runner as runner_module
    from integration.timing import time_side_by_side_ms
    tokens, hidden, inter = 8192, 4096, 14336
    kernels = results["prefill_ops"] = []
    for dtype in (torch.float16, torch.bfloat16):
        h = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
        delta, w = torch.randn_like(h), torch.randn(hidden, device="cuda", dtype=dtype)
        gate_up = torch.randn(tokens, 2 * inter, device="cuda", dtype=dtype) * 4
        summed = h + delta
        fused_h = h.clone()
        normed = rms_norm(fused_h, w, 1e-5, add=delta)
        act = silu_mul(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        bits = {"add": torch.equal(fused_h, summed),
                "norm_equal_fraction": (normed == torch_rms_norm(summed, w, 1e-5)).float().mean().item(),
                "norm_max_abs_diff": (normed.float() - torch_rms_norm(summed, w, 1e-5).float()).abs().max().item(),
                "silu_mul_equal_fraction": (act == F.silu(gate) * up).float().mean().item(),
                "silu_mul_max_abs_diff": (act.float() - (F.silu(gate) * up).float()).abs().max().item()}
        scratch = h.clone()
        times = time_side_by_side_ms({
            "torch add+norm": lambda: torch_rms_norm(h + delta, w, 1e-5),
            "fused add+norm": lambda: rms_norm(scratch.copy_(h), w, 1e-5, add=delta),
            "copy (in the fused timing)": lambda: scratch.copy_(h),
            "torch silu*up": lambda: F.silu(gate) * up,
            "fused silu_mul": lambda: silu_mul(gate_up, out=act),
        }, repeats=30)
        row = {"dtype": str(dtype), **bits, **{name: t["ms"] for name, t in times.items()}}
        # bytes the fused kernels must move: h and delta in, h and the normalised rows out; [gate | up] in, act out
        row["fused_norm_TBps"] = 4 * h.numel() * h.element_size() / ((row["fused add+norm"]
                                                                      - row["copy (in the fused timing)"]) * 1e9)
        row["silu_mul_TBps"] = 3 * act.numel() * act.element_size() / (row["fused silu_mul"] * 1e9)
        kernels.append(row)
        log("prefill ops", row)
        save()
        del h, delta, gate_up, summed, fused_h, normed, act, gate, up, scratch
    release()
    step_before = load_carried("step_before", ".probe/step_before.py")
    prefill_now = runner_module.prefill
    ttft_alternated("prefill_ops", {
        "torch ops (before)": lambda: setattr(runner_module, "prefill", step_before.prefill),
        "fused (now)": lambda: setattr(runner_module, "prefill", prefill_now)})
    runner_module.prefill = prefill_now

if "rope_prefill" in parts:
    # rope_append with one program a token (all heads) against one a (token, head), the kernel before, carried as
    # .probe/rope_append_before.py: bits and time at a 4096-token chunk of the 8B shape, then time to first token
    # with each in the engine's prefill beside HF SDPA, in turns
    import flashcore.engine.step as step_module
    from flashcore.ops.rope_append import rope_tables
    from integration.timing import time_side_by_side_ms
    before = load_carried("rope_append_before", ".probe/rope_append_before.py")
    now = step_module.rope_append
    kernels = results["rope_prefill"] = []
    for dtype in (torch.float16, torch.bfloat16):
        tokens, q_heads, kv_heads, head_dim = 4096, 32, 8, 128
        cos, sin = rope_tables(1.0 / (500000 ** (torch.arange(0, head_dim, 2, device="cuda") / head_dim)), 1.0,
                               32768, dtype)
        qkv = torch.randn(1, tokens, (q_heads + 2 * kv_heads) * head_dim, device="cuda", dtype=dtype)
        write_pos = torch.tensor([1000], dtype=torch.int32, device="cuda")
        outs = {}
        for name, fn in (("before", before.rope_append), ("now", now)):
            cache = torch.zeros(2, 1, kv_heads, 8192, head_dim, device="cuda", dtype=dtype)
            q_out = torch.empty(1, tokens, q_heads, head_dim, device="cuda", dtype=dtype)
            fn(qkv, cos, sin, cache[0], cache[1], write_pos, q_out=q_out)
            outs[name] = (q_out, cache)
        same = all(torch.equal(a, b) for a, b in zip(outs["before"], outs["now"]))
        q_out, cache = outs["now"]
        times = time_side_by_side_ms({
            name: (lambda fn=fn: fn(qkv, cos, sin, cache[0], cache[1], write_pos, q_out=q_out))
            for name, fn in (("before", before.rope_append), ("now", now))}, repeats=30)
        row = {"dtype": str(dtype), "bitwise_equal": same, **{f"{k}_us": t["ms"] * 1e3 for k, t in times.items()}}
        # bytes: the qkv rows in, the rotated queries and the cache rows out
        row["now_TBps"] = 2 * qkv.numel() * qkv.element_size() / (row["now_us"] * 1e6)
        kernels.append(row)
        log("rope prefill", row)
        save()
    release()
    ttft_alternated("rope_prefill", {"rope before": lambda: setattr(step_module, "rope_append", before.rope_append),
                                     "rope now": lambda: setattr(step_module, "rope_append", now)})
    step_module.rope_append = now

if "owner" in parts:
    # The new row's block in rope_decode_attention with its V loaded beside its K (OWNER_LOAD_V_WITH_K) against V
    # loaded after the scores: bitwise the same output and cache, then the engine alternated twice
    import flashcore.decode as decode_module
    mismatches, cases = [], 0
    for dtype, lens, start, cache, qkv, cos, sin, splits in rope_decode_cases():
        outs = []
        for flag in (True, False):
            decode_module.OWNER_LOAD_V_WITH_K = flag
            key, value = cache[0].clone(), cache[1].clone()
            outs.append((decode_module.rope_decode_attention(qkv, cos, sin, key, value, kv_lens=lens,
                                                             kv_start=start, splits=splits), key, value))
        cases += 1
        if not all(torch.equal(a, b) for a, b in zip(*outs)):
            mismatches.append(f"{dtype} splits {splits}")
    decode_module.OWNER_LOAD_V_WITH_K = True
    results["owner_check"] = {"cases": cases, "mismatches": mismatches}
    log(f"owner V with K: {cases - len(mismatches)}/{cases} bitwise equal; {mismatches}")
    engine_alternated("owner", {flag: lambda f=flag: setattr(decode_module, "OWNER_LOAD_V_WITH_K", f == "V with K")
                                for flag in ("V with K", "V after scores")}, cache_lens=(512, 2048, 8192))
    decode_module.OWNER_LOAD_V_WITH_K = True

if "silu" in parts:
    # The gate/up GEMV's epilogue silu through libdevice's expf and IEEE division (50ca5c3) against Triton's exp and
    # fast division (the GEMV of 5fffe6c, carried as .probe/gemv_before.py): the engine A/B, alternated twice
    import flashcore.engine.step as step_module
    gemv_before = load_carried("gemv_before", ".probe/gemv_before.py")
    gemv_now = step_module.gemv
    engine_alternated("silu", {"libdevice silu": lambda: setattr(step_module, "gemv", gemv_now),
                               "fast silu (before)": lambda: setattr(step_module, "gemv", gemv_before.gemv)})
    step_module.gemv = gemv_now

if {"chain", "engine", "profile", "compile"} & set(parts):
    model = llama31_8b(dtype=torch.float16)
    if "chain" in parts:
        engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=64)
        results["projection_chain"] = kernel_bench.projection_chain(engine.weights, bw)
        log("chain", results["projection_chain"])
        del engine
    if "engine" in parts:
        paths = ["flashcore-engine", "flashcore-engine-cublas", "hf-static-graph-sdpa", "hf-static-graph-flashcore"]
        results["decode"] = bench.decode_sweep(model, [2048, 8192], bw, paths, log=log)
        results["batch_sweep"] = bench.batch_sweep(model, [1, 8, 32], 2048, bw)
        log(results["batch_sweep"])
    if "compile" in parts:
        small = llama31_8b(dtype=torch.float16, num_layers=2)
        results["hf_compile"] = bench.hf_compile_rows(small, prompt_len=512, log=log)
        del small
    if "profile" in parts:
        from torch.profiler import ProfilerActivity, profile
        engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=2100, cuda_graphs=False)
        program = engine.engine.program_for(1)
        engine.engine.state.write_pos.fill_(2048)
        program.step()
        engine.engine.state.write_pos.fill_(2048)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            program.step()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15)
        results["profile"] = table
        log(table)
    save()
log(f"total {time.time() - t0:.0f} s")
