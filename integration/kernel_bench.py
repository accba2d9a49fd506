"""Kernel benchmarks, side by side with PyTorch's own kernels: decode attention, causal prefill attention, the
decode GEMV and the whole projection chain of one decode step. Each function returns rows for a results file.

The floor of a memory-bound kernel is the bytes it must move divided by the copy bandwidth measured in the
same run; `bandwidth_fraction` is floor / measured (1.0 is the floor; reads alone can exceed it slightly, since
a copy also writes).
"""
import torch
import torch.nn.functional as F
import triton.testing

from flashcore import decode_attention, prefill_attention
from flashcore.decode import DecodeWorkspace, default_splits, num_splits, sm_count
from flashcore.ops.gemv import gemv
from integration.timing import (rotation_count, time_graph_ms, time_graphs_side_by_side_ms,
                                time_python_side_by_side_ms)

GQA_8B = {"q_heads": 32, "kv_heads": 8, "head_dim": 128}


def _median_us(fn):
    """Median microseconds of fn on the device, each call after an L2 flush (triton's do_bench; a host cost
    shorter than the flush does not show): for kernels that run far longer than their launch."""
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3


def _rotating(calls):
    """A function that calls each of `calls` in turn, for graph capture (one call per input copy)."""
    def run():
        for call in calls:
            call()
    return run


def decode_attention_rows(cache_lens, bandwidth, batches=(1,), dtype=torch.float16, q_heads=32, kv_heads=8,
                          head_dim=128):
    """Decode attention at each cache length: FlashCore and SDPA (enable_gqa, and HF's repeat_kv + SDPA),
    called from Python back to back (the host's cost counts wherever it exceeds the device's) and inside a CUDA
    graph, both over rotated caches (cold L2)."""
    rows = []
    for batch in batches:
        for cache_len in cache_lens:
            kv_bytes = 2 * batch * kv_heads * cache_len * head_dim * torch.finfo(dtype).bits // 8
            copies = rotation_count(kv_bytes, limit=8)
            keys = [torch.randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device="cuda")
                    for _ in range(copies)]
            values = [torch.randn_like(k) for k in keys]
            q = torch.randn(batch, q_heads, 1, head_dim, dtype=dtype, device="cuda")
            lens = torch.full((batch,), cache_len, dtype=torch.int32, device="cuda")
            out = torch.empty(batch, 1, q_heads, head_dim, dtype=dtype, device="cuda").transpose(1, 2)
            splits = num_splits(batch, kv_heads, cache_len, sm_count(q.device))
            workspace = DecodeWorkspace.for_shape(batch, q_heads, head_dim, splits, q.device)

            def flashcore_call(i):
                return lambda: decode_attention(q, keys[i], values[i], kv_lens=lens, out=out, workspace=workspace)

            def sdpa_call(i):
                return lambda: F.scaled_dot_product_attention(q, keys[i], values[i], enable_gqa=True)

            group = q_heads // kv_heads

            def repeat_kv_call(i):  # HF's sdpa path: expand the KV heads, then SDPA
                return lambda: F.scaled_dot_product_attention(q, keys[i].repeat_interleave(group, dim=1),
                                                              values[i].repeat_interleave(group, dim=1))

            # From Python: calls made back to back over the rotated caches, as a model's layers make them, at least
            # 32 a run, so that the first call's start on an idle device weighs little. FlashCore with the default
            # workspace and a fresh output: the call a Hugging Face layer makes.
            calls_per_run = copies * max(1, 32 // copies)
            python = time_python_side_by_side_ms({
                name: _rotating([make_call(i) for i in range(copies)] * (calls_per_run // copies))
                for name, make_call in (
                    ("flashcore", lambda i: lambda: decode_attention(q, keys[i], values[i], kv_lens=lens)),
                    ("sdpa_gqa", sdpa_call), ("sdpa_repeat_kv", repeat_kv_call))}, calls_per_run)
            graph = time_graphs_side_by_side_ms({
                "flashcore": _rotating([flashcore_call(i) for i in range(copies)]),
                "sdpa": _rotating([sdpa_call(i) for i in range(copies)])}, copies)
            row = {
                "cache_len": cache_len, "batch": batch,
                "flashcore_us": python["flashcore"]["ms"] * 1e3, "sdpa_gqa_us": python["sdpa_gqa"]["ms"] * 1e3,
                "sdpa_repeat_kv_us": python["sdpa_repeat_kv"]["ms"] * 1e3,
                "flashcore_graph_us": graph["flashcore"]["ms"] * 1e3, "sdpa_graph_us": graph["sdpa"]["ms"] * 1e3,
                # each timing's 10th and 90th percentiles: the spread a difference must beat
                **{f"{name}{where}_us_p{pct}": stats[f"ms_p{pct}"] * 1e3
                   for where, timings in (("", python), ("_graph", graph)) for name, stats in timings.items()
                   for pct in (10, 90)},
                "floor_us": kv_bytes / bandwidth * 1e6, "splits": splits,  # in the graph
                "python_splits": default_splits(batch, kv_heads, cache_len, q.device),  # called from Python
            }
            row["bandwidth_fraction"] = row["floor_us"] / row["flashcore_graph_us"]
            rows.append(row)
            del keys, values
    return rows


def decode_tuning_rows(cache_len, bandwidth, splits_options, dtype=torch.float16, batch=1):
    """Graph time of FlashCore decode (8B heads) at one cache length and batch for each split count: the data
    behind num_splits' heuristic."""
    q_heads, kv_heads, head_dim = GQA_8B.values()
    kv_bytes = 2 * batch * kv_heads * cache_len * head_dim * 2
    copies = rotation_count(kv_bytes, limit=8)
    keys = [torch.randn(batch, kv_heads, cache_len, head_dim, dtype=dtype, device="cuda") for _ in range(copies)]
    values = [torch.randn_like(k) for k in keys]
    q = torch.randn(batch, q_heads, 1, head_dim, dtype=dtype, device="cuda")
    out = torch.empty_like(q)
    rows = []
    for splits in splits_options:
        workspace = DecodeWorkspace.for_shape(batch, q_heads, head_dim, splits, q.device)
        calls = [lambda i=i: decode_attention(q, keys[i], values[i], splits=splits, out=out, workspace=workspace)
                 for i in range(copies)]
        us = time_graph_ms(_rotating(calls), copies)["ms"] * 1e3
        rows.append({"cache_len": cache_len, "batch": batch, "splits": splits, "graph_us": us,
                     "bandwidth_fraction": kv_bytes / bandwidth * 1e6 / us})
    return rows


def prefill_attention_rows(seq_lens, dtypes=(torch.float16, torch.bfloat16), head_dims=(128, 64)):
    """Causal prefill attention TFLOP/s: FlashCore against SDPA's flash and cuDNN backends (K/V expanded to the
    query heads beforehand, outside the timing, so each backend gets the layout it wants)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows = []
    for dtype in dtypes:
        for head_dim in head_dims:
            q_heads, kv_heads = (32, 8) if head_dim == 128 else (9, 3)
            for seq_len in seq_lens:
                q = torch.randn(1, q_heads, seq_len, head_dim, dtype=dtype, device="cuda")
                k = torch.randn(1, kv_heads, seq_len, head_dim, dtype=dtype, device="cuda")
                v = torch.randn_like(k)
                k_full = k.repeat_interleave(q_heads // kv_heads, dim=1)
                v_full = v.repeat_interleave(q_heads // kv_heads, dim=1)
                flops = 4 * seq_len * seq_len * head_dim * q_heads / 2  # causal: half the score matrix
                row = {"seq_len": seq_len, "dtype": str(dtype).replace("torch.", ""), "D": head_dim,
                       "Hq": q_heads, "Hkv": kv_heads,
                       "flashcore_tflops": flops / _median_us(lambda: prefill_attention(q, k, v, causal=True)) / 1e6}
                for name, backend in (("sdpa_flash_tflops", SDPBackend.FLASH_ATTENTION),
                                      ("sdpa_cudnn_tflops", SDPBackend.CUDNN_ATTENTION)):
                    try:
                        with sdpa_kernel(backend):
                            us = _median_us(lambda: F.scaled_dot_product_attention(q, k_full, v_full, is_causal=True))
                        row[name] = flops / us / 1e6
                    except RuntimeError as err:  # a backend that refuses this shape or dtype
                        row[name] = None
                        row[name.replace("_tflops", "_error")] = str(err).splitlines()[0][:200]
                rows.append(row)
    return rows


def prefill_cases(device, dtype=torch.float16, q_heads=32, kv_heads=8, head_dim=128, padded=(4096, 3072, 2048, 1024),
                  chunk=(4096, 16384)):
    """The two prefill shapes a serving user meets besides one full prompt, each as (name, shape, flashcore_fn,
    sdpa_fn, flops) computing the same attention two ways:
    - "padded-batch": a left-padded batch (valid lengths `padded`, capacity the longest), causal within each
      sequence; SDPA gets the boolean mask Hugging Face would build (its default dispatch for a masked call);
    - "chunked": the last Sq = chunk[0] queries of a Skv = chunk[1] prompt (chunked prefill), causal aligned to
      the bottom right; SDPA gets torch's causal_lower_right bias.
    flops counts the score and value products of the keys each query may see, as FlashAttention counts causal work.
    K/V go to SDPA expanded to the query heads, as in prefill_attention_rows."""
    from torch.nn.attention.bias import causal_lower_right

    group = q_heads // kv_heads
    cases = []

    capacity, batch = max(padded), len(padded)
    q = torch.randn(batch, q_heads, capacity, head_dim, dtype=dtype, device=device)
    k = torch.randn(batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
    v = torch.randn_like(k)
    start = torch.tensor([capacity - n for n in padded], dtype=torch.int32, device=device)
    positions = torch.arange(capacity, device=device)
    causal = positions[None, :, None] >= positions[None, None, :]
    visible = causal & (positions[None, None, :] >= start[:, None, None])
    k_full, v_full = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    cases.append(("padded-batch", {"B": batch, "Sq": capacity, "Skv": capacity, "valid": list(padded), "D": head_dim},
                  lambda: prefill_attention(q, k, v, causal=True, kv_start=start),
                  lambda: F.scaled_dot_product_attention(q, k_full, v_full, attn_mask=visible[:, None]),
                  sum(4 * n * n / 2 * head_dim * q_heads for n in padded)))

    q_len, kv_len = chunk
    qc = torch.randn(1, q_heads, q_len, head_dim, dtype=dtype, device=device)
    kc = torch.randn(1, kv_heads, kv_len, head_dim, dtype=dtype, device=device)
    vc = torch.randn_like(kc)
    kc_full, vc_full = kc.repeat_interleave(group, dim=1), vc.repeat_interleave(group, dim=1)
    bias = causal_lower_right(q_len, kv_len)
    cases.append(("chunked", {"B": 1, "Sq": q_len, "Skv": kv_len, "D": head_dim},
                  lambda: prefill_attention(qc, kc, vc, causal=True),
                  lambda: F.scaled_dot_product_attention(qc, kc_full, vc_full, attn_mask=bias),
                  4 * (q_len * (kv_len - q_len) + q_len * q_len / 2) * head_dim * q_heads))
    return cases


def prefill_case_rows(dtypes=(torch.float16, torch.bfloat16)):
    """TFLOP/s of prefill_cases on the GPU, FlashCore beside SDPA (no target: the issue asks for the numbers)."""
    rows = []
    for dtype in dtypes:
        for name, shape, ours, theirs, flops in prefill_cases("cuda", dtype):
            row = {"case": name, **shape, "dtype": str(dtype).replace("torch.", ""),
                   "flashcore_tflops": flops / _median_us(ours) / 1e6}
            try:
                row["sdpa_tflops"] = flops / _median_us(theirs) / 1e6
            except RuntimeError as err:  # no backend for this mask and dtype
                row["sdpa_tflops"] = None
                row["sdpa_error"] = str(err).splitlines()[0][:200]
            rows.append(row)
    return rows


GEMV_SHAPES_8B = [(4096, 4096), (1024, 4096), (6144, 4096), (4096, 14336), (28672, 4096), (14336, 4096),
                  (128256, 4096)]


def gemv_rows(bandwidth, shapes=GEMV_SHAPES_8B, rows_m=(1, 2, 4, 8), dtype=torch.float16):
    """FlashCore's GEMV against cuBLAS (torch.mm) for each [N, K] weight and batch M, weights rotated."""
    rows = []
    for n, k in shapes:
        weight_bytes = n * k * 2
        copies = rotation_count(weight_bytes, limit=16)
        weights = [torch.randn(n, k, dtype=dtype, device="cuda") * 0.02 for _ in range(copies)]
        for m in rows_m:
            x = torch.randn(m, k, dtype=dtype, device="cuda")
            out = torch.empty(m, n, dtype=dtype, device="cuda")
            timed = time_graphs_side_by_side_ms({
                "ours": _rotating([lambda w=w: gemv(x, w, out=out) for w in weights]),
                "cublas": _rotating([lambda w=w: torch.mm(x, w.t(), out=out) for w in weights])}, copies)
            ours, theirs = timed["ours"]["ms"], timed["cublas"]["ms"]
            floor_us = (weight_bytes + 2 * m * (n + k)) / bandwidth * 1e6
            spreads = {f"{name}_us_p{q}": timed[key][f"ms_p{q}"] * 1e3
                       for name, key in (("flashcore", "ours"), ("cublas", "cublas")) for q in (10, 90)}
            rows.append({"shape": f"{n}x{k}", "M": m, "flashcore_us": ours * 1e3, "cublas_us": theirs * 1e3,
                         "floor_us": floor_us, "bandwidth_fraction": floor_us / (ours * 1e3),
                         "cublas_bandwidth_fraction": floor_us / (theirs * 1e3), **spreads})
        del weights
    return rows


def projection_chain(weights, bandwidth):
    """Every projection of one batch-1 decode step, in a CUDA graph, over the model's real weights (15 GB for
    the 8B shape: nothing stays in L2). FlashCore: the fused GEMVs the engine runs (RMSNorm prologues, residual
    and SiLU·mul epilogues); cuBLAS: the same matrix products through torch.mm, without the fusions."""
    s = weights.shape
    dtype, device = weights.dtype, weights.device
    h = torch.randn(1, s.hidden, dtype=dtype, device=device)
    qkv = torch.empty(1, s.qkv_width, dtype=dtype, device=device)
    attn = torch.randn(1, s.q_heads * s.head_dim, dtype=dtype, device=device)
    act = torch.empty(1, s.intermediate, dtype=dtype, device=device)
    gate_up = torch.empty(1, 2 * s.intermediate, dtype=dtype, device=device)
    logits = torch.empty(1, s.vocab, dtype=dtype, device=device)
    o = torch.empty(1, s.hidden, dtype=dtype, device=device)

    def flashcore_chain():
        for layer in weights.layers:
            gemv(h, layer.qkv, norm_weight=layer.attn_norm, eps=s.rms_eps, out=qkv)
            gemv(attn, layer.o, residual=o, out=o)
            gemv(h, layer.gate_up, norm_weight=layer.mlp_norm, eps=s.rms_eps, activation="silu_mul", out=act)
            gemv(act, layer.down, residual=o, out=o)
        gemv(h, weights.lm_head, norm_weight=weights.final_norm, eps=s.rms_eps, out=logits)

    def cublas_chain():
        for layer in weights.layers:
            torch.mm(h, layer.qkv.t(), out=qkv)
            torch.mm(attn, layer.o.t(), out=o)
            torch.mm(h, layer.gate_up.t(), out=gate_up)
            torch.mm(act, layer.down.t(), out=o)
        torch.mm(h, weights.lm_head.t(), out=logits)

    weight_bytes = sum(t.numel() * t.element_size() for layer in weights.layers
                       for t in (layer.qkv, layer.o, layer.gate_up, layer.down)) \
        + weights.lm_head.numel() * weights.lm_head.element_size()
    timed = time_graphs_side_by_side_ms({"flashcore": flashcore_chain, "cublas": cublas_chain}, repeats=10)
    flashcore, cublas = timed["flashcore"], timed["cublas"]
    floor_ms = weight_bytes / bandwidth * 1e3
    return {"flashcore_ms": flashcore["ms"], "cublas_ms": cublas["ms"], "floor_ms": floor_ms,
            "flashcore_ratio_to_floor": flashcore["ms"] / floor_ms, "cublas_ratio_to_floor": cublas["ms"] / floor_ms,
            "weight_bytes": weight_bytes, "kernels_per_step": 4 * s.layers + 1}

