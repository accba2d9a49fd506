"""The decode-sweep benchmark: ms per token of every way to decode a Hugging Face Llama, side by side, against
the memory-bandwidth floor of the same run.

Paths (the `path` field of each row):
  hf-eager-sdpa / hf-eager-flashcore        the seed's loop: HF forward per token over a DynamicCache
  hf-static-graph-sdpa / -flashcore          HF forward over a StaticCache, captured whole in one CUDA graph
  hf-compile-sdpa / -flashcore               HF's own generate(cache_implementation="static") (compiled)
  flashcore-engine / flashcore-engine-cublas the FlashCore engine, GEMV kernels or cuBLAS projections

Decode timing needs a cache of a given length, not a real prompt of that length: each path's cache is filled
with random keys/values up to `cache_len` (the bytes a step reads are what set its time), and the next tokens
are timed one step at a time with CUDA events.
The floor of a batch-B step: every weight but the embedding table read once, plus B caches, over the copy
bandwidth measured in the same run.
"""
import gc
import time

import torch

from flashcore.engine.runner import capture_cuda_graph
from integration.engine import FlashCoreEngine
from integration.llama_flashcore import attention_implementation
from integration.timing import time_calls_ms, time_side_by_side_ms


def streamed_weight_bytes(model):
    """Bytes of weights one decode step reads: all parameters but the embedding table (lm_head counts, also
    when tied to the embedding)."""
    embed = model.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters() if p is not embed)
    if model.lm_head.weight is embed:
        total += embed.numel() * embed.element_size()
    return total


def kv_bytes_per_token(config, dtype_bytes=2):
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * dtype_bytes


def floor_ms(model, cache_len, bandwidth, batch=1):
    """The step's floor in ms, or None without a measured bandwidth (a CPU smoke run)."""
    if bandwidth is None:
        return None
    kv = kv_bytes_per_token(model.config, next(model.parameters()).element_size())
    return (streamed_weight_bytes(model) + batch * cache_len * kv) / bandwidth * 1e3


def kv_cache_bytes(model, cache_len):
    """The KV cache of one sequence of cache_len tokens as the engine allocates it (GQA), and as it would be
    with one KV head per query head (the MHA equivalent): bytes of the allocated buffers."""
    from dataclasses import replace

    from flashcore.engine import DecodeState
    from integration.engine import llama_shape

    param = next(model.parameters())
    shape = llama_shape(model.config)
    sizes = {}
    for name, kv_heads in (("gqa", shape.kv_heads), ("mha_equivalent", shape.q_heads)):
        state = DecodeState(replace(shape, kv_heads=kv_heads), 1, cache_len, param.dtype, param.device)
        sizes[name] = state.cache_bytes
        del state
    return {"cache_len": cache_len, **sizes, "ratio": sizes["mha_equivalent"] / sizes["gqa"]}


def _peak_memory():
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def _row(path, cache_len, timing, floor, batch=1):
    ms = timing["ms"]
    return {"path": path, "cache_len": cache_len, "batch": batch, "ms_per_token": ms, "ms_p10": timing["ms_p10"],
            "ms_p90": timing["ms_p90"], "tok_per_s": batch * 1e3 / ms, "floor_ms": floor,
            "ratio_to_floor": ms / floor if floor else None, "peak_memory_bytes": _peak_memory()}


def _random_kv(model, cache_len):
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    param = next(model.parameters())
    return torch.randn(1, config.num_key_value_heads, cache_len, head_dim, dtype=param.dtype, device=param.device)


@torch.no_grad()
def hf_eager_timing(model, cache_len, tokens=8):
    """The seed's loop: one HF forward per token over a DynamicCache already holding cache_len tokens."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for layer in range(model.config.num_hidden_layers):
        cache.update(_random_kv(model, cache_len), _random_kv(model, cache_len), layer)
    device = next(model.parameters()).device
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    position = [cache_len]

    def step():
        model(token, past_key_values=cache, position_ids=torch.tensor([position], device=device), use_cache=True,
              logits_to_keep=1)
        position[0] += 1

    return time_calls_ms(step, repeats=tokens, warmup=2)


@torch.no_grad()
def hf_static_graph_timing(model, cache_len, replays=20):
    """HF forward over a StaticCache holding cache_len tokens, captured in one CUDA graph and replayed."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=cache_len + replays + 16)
    device = next(model.parameters()).device
    token = torch.zeros(1, 1, dtype=torch.long, device=device)
    model(token, past_key_values=cache, use_cache=True, logits_to_keep=1)  # allocates the cache layers
    for layer in cache.layers:
        layer.keys.normal_()
        layer.values.normal_()
        layer.cumulative_length.fill_(cache_len)
    graph = capture_cuda_graph(lambda: model(token, past_key_values=cache, use_cache=True, logits_to_keep=1))
    for layer in cache.layers:  # the warm-up call advanced it
        layer.cumulative_length.fill_(cache_len)
    timing = time_calls_ms(graph.replay, repeats=replays, warmup=0)
    del graph, cache
    return timing


@torch.no_grad()
def engine_timing(engine, cache_len, batch=1, replays=30):
    """FlashCore engine decode steps (graph replays) with `batch` sequences of cache_len cached tokens."""
    state = engine.engine.state
    program = engine.engine.program_for(batch)  # captures on first use
    state.key.normal_()
    state.value.normal_()
    state.kv_start.zero_()
    state.write_pos.fill_(cache_len)
    state.length_bound = cache_len

    def step():
        state.reserve(1)
        program.run()

    timing = time_calls_ms(step, repeats=replays, warmup=2)
    return timing


def decode_sweep(model, cache_lens, bandwidth, paths, replays=30, eager_tokens=8, log=print):
    """Rows of ms/token for every path at every cache length (a row with "skipped" where a path cannot run)."""
    rows = []
    for cache_len in cache_lens:
        floor = floor_ms(model, cache_len, bandwidth)
        for path in paths:
            if torch.cuda.is_available():
                gc.collect()  # an engine and its step programs refer to each other: free the last one's memory now
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            try:
                timing = _time_path(model, path, cache_len, replays, eager_tokens)
                rows.append(_row(path, cache_len, timing, floor))
                log(f"{path:28s} cache {cache_len:6d}: {timing['ms']:.3f} ms/token"
                    + (f" ({timing['ms'] / floor:.2f}x floor)" if floor else ""))
            except torch.cuda.OutOfMemoryError as err:
                rows.append({"path": path, "cache_len": cache_len, "batch": 1, "floor_ms": floor,
                             "skipped": f"out of GPU memory: {str(err).splitlines()[0][:160]}"})
                log(f"{path:28s} cache {cache_len:6d}: skipped (out of memory)")
    return rows


def _time_path(model, path, cache_len, replays, eager_tokens):
    if path.startswith("hf-eager-"):
        with attention_implementation(model, path.removeprefix("hf-eager-")):
            return hf_eager_timing(model, cache_len, eager_tokens)
    if path.startswith("hf-static-graph-"):
        with attention_implementation(model, path.removeprefix("hf-static-graph-")):
            return hf_static_graph_timing(model, cache_len, replays)
    if path in ("flashcore-engine", "flashcore-engine-cublas"):
        projections = "cublas" if path.endswith("cublas") else "gemv"
        engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=cache_len + replays + 8,
                                 projections=projections)
        try:
            return engine_timing(engine, cache_len, replays=replays)
        finally:
            del engine
    raise ValueError(f"unknown path {path!r}")


def batch_sweep(model, batches, cache_len, bandwidth, replays=20):
    """Engine step time for each batch size at one cache length (one engine, one graph per batch size)."""
    gc.collect()  # the decode sweep's last engine
    engine = FlashCoreEngine(model, max_batch_size=max(batches), max_seq_len=cache_len + replays + 8)
    rows = []
    for batch in batches:
        timing = engine_timing(engine, cache_len, batch=batch, replays=replays)
        rows.append({"batch": batch, "cache_len": cache_len, "ms_per_step": timing["ms"],
                     "ms_p10": timing["ms_p10"], "ms_p90": timing["ms_p90"],
                     "tok_per_s": batch * 1e3 / timing["ms"],
                     "floor_ms": floor_ms(model, cache_len, bandwidth, batch)})
    del engine
    return rows


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _wall_ms(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


@torch.no_grad()
def time_to_first_token(model, prompt_lens, repeats=3):
    """Prompt in, first token out, through generate() with SDPA and through the engine, timed in turns (after a
    warm-up call of each)."""
    device = next(model.parameters()).device
    engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=max(prompt_lens) + 8)
    rows = []
    for prompt_len in prompt_lens:
        ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)

        def hf():
            with attention_implementation(model, "sdpa"):
                model.generate(ids, max_new_tokens=1, do_sample=False)

        def ours():
            engine.generate(ids, max_new_tokens=1)

        timings = time_side_by_side_ms({"hf-sdpa": hf, "flashcore-engine": ours}, repeats=repeats, warmup=1)
        rows += [{"prompt_len": prompt_len, "path": path, **stats} for path, stats in timings.items()]
    del engine
    return rows


@torch.no_grad()
def hf_compile_rows(model, implementations=("sdpa", "flashcore"), prompt_len=2048, rounds=2, log=print):
    """HF's compiled static-cache generate(): compile time, steady ms/token, and how many graphs a second
    call with a new prompt length and a new max_new_tokens compiles (0 means no recompilation).

    One compile is one sample, and compile times have moved by a third between runs: each implementation is
    compiled `rounds` times, in turns whose order flips every round (so neither always follows the other), with
    torch.compile's caches off (each compile is a cold one, not a cache hit of the last). A row gives the mean
    and every round's time."""
    import torch._inductor.config

    runs = {implementation: [] for implementation in implementations}
    with torch._inductor.config.patch(force_disable_caches=True):
        for round_index in range(rounds):
            order = implementations if round_index % 2 == 0 else implementations[::-1]
            for implementation in order:
                run = _compiled_generate_run(model, implementation, prompt_len)
                log(dict(run, round=round_index))
                runs[implementation].append(run)
    return [_compile_row(implementation, prompt_len, runs[implementation]) for implementation in implementations]


def _compile_row(implementation, prompt_len, runs):
    """One implementation's row from its rounds: means of the times, the most graphs any round recompiled."""
    row = {"path": f"hf-compile-{implementation}", "cache_len": prompt_len}
    failed = [run["skipped"] for run in runs if "skipped" in run]
    if failed:
        return dict(row, skipped=failed[0])
    return dict(row, compile_s=sum(run["compile_s"] for run in runs) / len(runs),
                compile_s_rounds=[run["compile_s"] for run in runs],
                ms_per_token=sum(run["ms_per_token"] for run in runs) / len(runs),
                recompiles_new_shapes=max(run["recompiles_new_shapes"] for run in runs))


def _compiled_generate_run(model, implementation, prompt_len):
    """One compile of generate(cache_implementation="static") from a reset torch._dynamo: {compile_s,
    ms_per_token, recompiles_new_shapes}, or {skipped: why} when it fails (a result to report, not a crash)."""
    import torch._dynamo

    device = next(model.parameters()).device
    torch._dynamo.reset()
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)

    def run(tokens, prompt=ids):
        return model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                              cache_implementation="static")

    with attention_implementation(model, implementation):
        try:
            first_ms = _wall_ms(lambda: run(16))
            short_ms = min(_wall_ms(lambda: run(16)) for _ in range(2))
            long_ms = min(_wall_ms(lambda: run(80)) for _ in range(2))
            graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            other = torch.randint(0, model.config.vocab_size, (1, prompt_len + 300), device=device)
            model.generate(other, max_new_tokens=40, min_new_tokens=40, do_sample=False,
                           cache_implementation="static")
            recompiles = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
            result = {"compile_s": (first_ms - short_ms) / 1e3, "ms_per_token": (long_ms - short_ms) / 64,
                      "recompiles_new_shapes": int(recompiles)}
        except Exception as err:
            result = {"skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    torch._dynamo.reset()
    return result


@torch.no_grad()
def benchmark_decode(model, tokenizer, cache_lengths=(512, 1024, 2048, 4096), new_tokens=16):
    """The seed's benchmark: for each cache length, a prompt of that many tokens through the model, then
    new_tokens greedy decode steps with the model's current attention, timed on the host (synchronised).
    Returns the seed's rows: cache_len, time_ms (per token), tokens_per_sec."""
    device = next(model.parameters()).device
    rows = []
    for cache_len in cache_lengths:
        ids = torch.randint(0, len(tokenizer), (1, cache_len), device=device)
        out = model(ids, use_cache=True, logits_to_keep=1)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
        _synchronize(device)
        per_token_ms = (time.perf_counter() - start) * 1e3 / new_tokens
        rows.append({"cache_len": cache_len, "time_ms": per_token_ms, "tokens_per_sec": 1e3 / per_token_ms})
    return rows
