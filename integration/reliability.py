"""Notebook 06's checks: memory over long decodes, bitwise determinism, long contexts and large-magnitude inputs,
for the engine (`flashcore-engine`) and the drop-in path (`hf-flashcore`: HF generate() with FlashCore attention).

On a GPU the Llama-3.1-8B shape runs in fp16 at the real sizes (1000 decode steps, 32K contexts); without one,
the tiny Llama runs the same functions at smoke sizes through the Triton interpreter, where torch.cuda's memory
counters do not exist, so memory is recorded as not measured rather than guessed.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import LogitsProcessor, LogitsProcessorList

from flashcore import decode_attention, prefill_attention
from flashcore.reference import attention_reference
from flashcore.testing import ABS_SLACK
from integration.bench import kv_bytes_per_token
from integration.engine import FlashCoreEngine
from integration.llama_flashcore import attention_implementation
from integration.models import LLAMA3_BOS_ID, llama31_8b, tiny_llama

# Largest |q·k| (before the softmax scale) of the large-magnitude inputs: near fp16's 65504, with room for the
# rounding of q and k to fp16, so that PyTorch's own fp16 attention (the rule's yardstick) still has finite scores.
LARGE_QK = 4.0e4


@dataclass(frozen=True)
class ReliabilityPlan:
    on_gpu: bool
    model_name: str
    dtype: torch.dtype
    prompt_len: int             # the prompt of the memory and determinism runs: seeded random token ids
    memory_steps: int           # decode steps of the memory runs (the schema's 1000)
    memory_early_step: int      # the step read first (the schema's 10)
    memory_baseline_steps: int  # new tokens of the SDPA run that measures generate()'s own per-token bytes
    determinism_tokens: int     # new tokens of each determinism run
    runs: int                   # determinism runs compared
    prefill_check_len: int      # causal prefill kernel check: Sq = Skv, 8B head layout
    reference_rows: int         # query rows per chunk of its float64 reference
    long_context: int           # tokens in context at the last step of the long generation
    long_new_tokens: int
    noise_backends: tuple       # two SDPA backends whose logit difference is the noise at a divergence (both must
                                # take HF's enable_gqa=True: on CUDA the memory-efficient one does not)
    magnitude_dtypes: tuple
    magnitude_heads: tuple      # (Hq, Hkv, D) of the large-magnitude cases
    magnitude_prefill_len: int
    magnitude_decode_len: int

    def build(self):
        if self.model_name == "llama-3.1-8b-shape":
            return llama31_8b(dtype=self.dtype, device="cuda")
        return tiny_llama(dtype=self.dtype)


def reliability_plan(model_name="auto"):
    """The 8B shape at full size on a GPU; the tiny Llama at smoke sizes elsewhere (fp32: the interpreter has
    no bf16 and runs fp16 matmuls slowly)."""
    on_gpu = torch.cuda.is_available()
    if model_name == "auto":
        model_name = "llama-3.1-8b-shape" if on_gpu else "tiny"
    if model_name not in ("llama-3.1-8b-shape", "tiny"):
        raise ValueError(f"model_name must be 'auto', 'llama-3.1-8b-shape' or 'tiny', got {model_name!r}")
    if on_gpu:
        return ReliabilityPlan(
            on_gpu=True, model_name=model_name, dtype=torch.float16 if model_name != "tiny" else torch.float32,
            prompt_len=32, memory_steps=1000, memory_early_step=10, memory_baseline_steps=100,
            determinism_tokens=64, runs=3, prefill_check_len=32768, reference_rows=512, long_context=32768,
            long_new_tokens=32, noise_backends=(SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION),
            magnitude_dtypes=(torch.float16, torch.bfloat16), magnitude_heads=(32, 8, 128),
            magnitude_prefill_len=2048, magnitude_decode_len=8192)
    return ReliabilityPlan(
        on_gpu=False, model_name=model_name, dtype=torch.float32, prompt_len=8, memory_steps=4,
        memory_early_step=2, memory_baseline_steps=2, determinism_tokens=3, runs=3, prefill_check_len=128,
        reference_rows=64, long_context=48, long_new_tokens=4,
        noise_backends=(SDPBackend.FLASH_ATTENTION, SDPBackend.MATH), magnitude_dtypes=(torch.float16, torch.float32),
        magnitude_heads=(8, 2, 64), magnitude_prefill_len=96, magnitude_decode_len=200)


def random_prompt(model, length, seed=0):
    """int64 [1, length] ordinary token ids (above the tiny model's pad/bos/eos, below Llama 3's special tokens)
    on the model's device, the same for a given seed."""
    high = min(model.config.vocab_size, LLAMA3_BOS_ID)
    ids = torch.randint(3, high, (1, length), generator=torch.Generator().manual_seed(seed))
    return ids.to(model.device)


def _dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def _within_rule(err, torch_err):
    """flashcore.testing's acceptance rule: within twice PyTorch's own low-precision error, plus ABS_SLACK."""
    return err <= 2 * torch_err + ABS_SLACK


# ------------------------------------------------------------------------------------------------- memory

def memory_reading(device):
    """(allocated, requested) bytes on a CUDA device, or (None, None) elsewhere. memory_allocated counts the
    allocator's blocks: rounded up to 512 bytes, and a cached block reused for a smaller tensor counts whole
    (up to 1 MiB more). requested_bytes counts what the tensors asked for, exactly: the figure to hold to a
    byte-exact expectation."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, None
    return torch.cuda.memory_allocated(device), torch.cuda.memory_stats(device)["requested_bytes.all.current"]


class _StepMemory:
    """A transformers-style streamer for FlashCoreEngine.generate: the engine hands it the prompt, then the new
    tokens every few steps (and at the last); it reads device memory each time, keyed by the step reached."""

    def __init__(self, device):
        self.device, self.step, self.readings = device, None, {}

    def put(self, tokens):
        if self.step is None:  # the prompt
            self.step = 0
            return
        self.step += tokens.numel()
        self.readings[self.step] = memory_reading(self.device)

    def end(self):
        pass


class _MemoryAtSteps(LogitsProcessor):
    """Reads device memory when HF generate() asks for the scores of new token k, for k in `steps`; the scores
    pass unchanged."""

    def __init__(self, device, steps):
        self.device, self.steps, self.calls, self.readings = device, set(steps), 0, {}

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls in self.steps:
            self.readings[self.calls] = memory_reading(self.device)
        return scores


def expected_kv_cache_bytes(model, max_batch, max_len):
    """2 (K and V) x layers x kv_heads x head_dim x dtype bytes, per cached token, for max_batch x max_len tokens."""
    return kv_bytes_per_token(model.config, next(model.parameters()).element_size()) * max_batch * max_len


def engine_memory_row(engine, input_ids, steps, early_step):
    """Device memory inside FlashCoreEngine.generate, read by a streamer: at step `early_step` of an
    early_step-token run and through a `steps`-token run (every 16 steps and at its end). The engine allocates
    its cache and buffers up front, so every reading must be the same. After a warm-up run, which captures the
    CUDA graph. Also the KV cache's bytes against the computed size."""
    device = input_ids.device
    engine.generate(input_ids, max_new_tokens=early_step, eos_token_id=[])  # warm-up
    early, late = _StepMemory(device), _StepMemory(device)
    engine.generate(input_ids, max_new_tokens=early_step, eos_token_id=[], streamer=early)
    engine.generate(input_ids, max_new_tokens=steps, eos_token_id=[], streamer=late)
    state = engine.engine.state
    row = {"path": "flashcore-engine", "steps": steps, "early_step": early_step,
           "read_by": f"a streamer inside generate(): at step {early_step} of a run of {early_step} tokens; every "
                      f"16 steps and at step {steps} of a run of {steps} tokens",
           "allocated_after_10": early.readings[early_step][0], "allocated_after_1000": late.readings[steps][0],
           "requested_after_10": early.readings[early_step][1], "requested_after_1000": late.readings[steps][1],
           "kv_cache_bytes": engine.kv_cache_bytes,
           "kv_cache_bytes_expected": expected_kv_cache_bytes(engine.model, state.max_batch, state.max_len)}
    measured = row["allocated_after_10"] is not None
    allocated = [reading[0] for reading in late.readings.values()]
    row["allocated_spread"] = max(allocated) - min(allocated) if measured else None
    row["memory_measured"] = measured
    steady = not measured or (row["allocated_after_10"] == row["allocated_after_1000"]
                              and row["requested_after_10"] == row["requested_after_1000"]
                              and row["allocated_spread"] == 0)
    row["passed"] = steady and row["kv_cache_bytes"] == row["kv_cache_bytes_expected"]
    return row


def cache_growth_verdict(growth, tokens, kv_bytes, baseline_growth, baseline_tokens):
    """HF's DynamicCache grows by kv_bytes per token by design, and generate() keeps int64 tensors as long as the
    sequence besides it (input ids, attention mask, position ids, ...): their bytes per token come from a baseline
    run with SDPA attention. Growth beyond tokens x (kv_bytes + those) is FlashCore's leak. Byte-exact, since
    requested bytes carry no allocator rounding. None fields when memory was not measured."""
    if growth is None:
        return {"other_bytes_per_token": None, "expected_growth": None, "leak_bytes": None, "passed": None}
    other = (baseline_growth - baseline_tokens * kv_bytes) / baseline_tokens
    expected = tokens * (kv_bytes + other)
    return {"other_bytes_per_token": other, "expected_growth": expected, "leak_bytes": growth - expected,
            "passed": growth == expected}


@torch.no_grad()
def _hf_readings(model, implementation, input_ids, early_step, steps):
    """Memory readings of HF generate() with `implementation` attention when it scores new tokens early_step
    and steps, after a short warm-up run."""
    mask = torch.ones_like(input_ids)
    probe = _MemoryAtSteps(input_ids.device, (early_step, steps))
    with attention_implementation(model, implementation):
        for new_tokens, processors in ((early_step, []), (steps, [probe])):
            model.generate(input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False, logits_processor=LogitsProcessorList(processors))
    return probe.readings[early_step], probe.readings[steps]


def hf_memory_row(model, input_ids, steps, early_step, baseline_steps):
    """HF generate() with FlashCore attention over its DynamicCache, new tokens early_step to steps, against the
    cache's own growth and generate()'s per-token bookkeeping (measured with SDPA over baseline_steps tokens:
    SDPA decodes slower, and the bookkeeping does not depend on the attention)."""
    (allocated_early, requested_early), (allocated_late, requested_late) = _hf_readings(
        model, "flashcore", input_ids, early_step, steps)
    baseline_early, baseline_late = _hf_readings(model, "sdpa", input_ids, early_step, early_step + baseline_steps)
    measured = requested_early is not None
    kv_bytes = kv_bytes_per_token(model.config, next(model.parameters()).element_size())
    tokens = steps - early_step
    growth = requested_late - requested_early if measured else None
    row = {"path": "hf-flashcore", "steps": steps, "early_step": early_step,
           "read_by": f"a LogitsProcessor: when generate() scores new tokens {early_step} and {steps}",
           "allocated_after_10": allocated_early, "allocated_after_1000": allocated_late,
           "requested_after_10": requested_early, "requested_after_1000": requested_late,
           "memory_measured": measured, "kv_bytes_per_token": kv_bytes, "growth": growth,
           "growth_beyond_kv": growth - tokens * kv_bytes if measured else None,
           "baseline": f"HF generate() with SDPA, new tokens {early_step} to {early_step + baseline_steps}"}
    baseline_growth = baseline_late[1] - baseline_early[1] if measured else None
    row.update(cache_growth_verdict(growth, tokens, kv_bytes, baseline_growth, baseline_steps))
    return row


# -------------------------------------------------------------------------------------------- determinism

@torch.no_grad()
def hf_greedy(model, input_ids, new_tokens):
    """HF greedy generate() of exactly new_tokens tokens (end of sequence suppressed): (tokens [N], raw logits
    [N, V] fp32)."""
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences[0, input_ids.shape[1]:], torch.stack(out.logits, dim=1)[0]


def _all_equal(tensors):
    return all(torch.equal(tensors[0], t) for t in tensors[1:])


def hf_determinism_row(model, input_ids, new_tokens, runs):
    """`runs` identical greedy generate() calls with FlashCore attention: tokens and every step's logits."""
    with attention_implementation(model, "flashcore"):
        outputs = [hf_greedy(model, input_ids, new_tokens) for _ in range(runs)]
    return _determinism_row("hf-flashcore", runs, new_tokens, [o[0] for o in outputs], [o[1] for o in outputs],
                            "every step's logits (generate(output_logits=True))")


def _engine_snapshot(engine, input_ids, new_tokens):
    """(new tokens, [last step's logits buffer, filled K and V cache rows of every layer]), copied."""
    tokens = engine.generate(input_ids, max_new_tokens=new_tokens, eos_token_id=[])[0, input_ids.shape[1]:]
    state = engine.engine.state
    filled = int(state.write_pos[0])
    logits = engine.engine.program_for(1).buffers.logits
    return tokens, [t.clone() for t in (logits, state.key[:, 0, :, :filled], state.value[:, 0, :, :filled])]


def engine_determinism_row(engine, input_ids, new_tokens, runs):
    """`runs` identical engine generations. The engine returns tokens only: its "logits" are the last decode
    step's logits buffer, and with them the KV cache contents (every layer, every filled position)."""
    snapshots = [_engine_snapshot(engine, input_ids, new_tokens) for _ in range(runs)]
    states = [torch.cat([t.flatten().float() for t in s[1]]) for s in snapshots]
    return _determinism_row("flashcore-engine", runs, new_tokens, [s[0] for s in snapshots], states,
                            "the last step's logits buffer and the filled KV cache, bitwise")


def _determinism_row(path, runs, new_tokens, tokens, logits, compared):
    identical_tokens, identical_logits = _all_equal(tokens), _all_equal(logits)
    return {"path": path, "runs": runs, "new_tokens": new_tokens, "identical_tokens": identical_tokens,
            "identical_logits": identical_logits, "logits_compared": compared,
            "passed": identical_tokens and identical_logits}


# ------------------------------------------------------------------------------------------- long context

def _random_qkv(heads, q_len, kv_len, dtype, device, seed):
    q_heads, kv_heads, head_dim = heads
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, n, head_dim, generator=gen).to(device=device, dtype=dtype)
            for h, n in ((q_heads, q_len), (kv_heads, kv_len), (kv_heads, kv_len))]


def prefill_long_context_row(seq_len, reference_rows, heads=(32, 8, 128), dtype=torch.float16, device="cuda",
                             seed=0):
    """Causal prefill of seq_len queries over seq_len keys (8B head layout) through FlashCore's kernel, judged by
    the acceptance rule with PyTorch's SDPA in the same precision as the yardstick. The float64 reference of
    every query row is computed in chunks of reference_rows rows (a chunk's queries are the last rows of its
    keys, so the causal reference of keys [0, end) is that chunk's exactly)."""
    q, k, v = _random_qkv(heads, seq_len, seq_len, dtype, device, seed)
    out = prefill_attention(q, k, v, causal=True)
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    err = torch_err = 0.0
    for start in range(0, seq_len, reference_rows):
        end = min(start + reference_rows, seq_len)
        ref = attention_reference(q[:, :, start:end], k[:, :, :end], v[:, :, :end], causal=True)
        err = max(err, (out[:, :, start:end].double() - ref).abs().max().item())
        torch_err = max(torch_err, (sdpa[:, :, start:end].double() - ref).abs().max().item())
        del ref
    finite = bool(torch.isfinite(out).all())
    return {"kind": "prefill", "B": 1, "Hq": heads[0], "Hkv": heads[1], "D": heads[2], "Sq": seq_len,
            "Skv": seq_len, "dtype": _dtype_name(dtype), "err": err, "torch_err": torch_err,
            "ratio": err / max(torch_err, ABS_SLACK), "finite": finite,
            "yardstick": f"SDPA (enable_gqa, is_causal) in {_dtype_name(dtype)}",
            "reference": f"float64, every query row, {reference_rows} rows at a time",
            "passed": finite and _within_rule(err, torch_err)}


@torch.no_grad()
def backend_noise(model, prefix_ids, backends):
    """max |logits_a - logits_b| at the last position of prefix_ids between two SDPA backends: the rounding
    noise of the precision where eager attention cannot run (it would materialise every score)."""
    logits = []
    with attention_implementation(model, "sdpa"):
        for backend in backends:
            with sdpa_kernel(backend):
                logits.append(model(prefix_ids, logits_to_keep=1, use_cache=False).logits[0, -1].float())
    return (logits[0] - logits[1]).abs().max().item()


def engine_long_generation_row(model, context, new_tokens, backends, seed=0):
    """Greedy generation at a `context`-token context (random prompt of context - new_tokens ids): the engine
    against HF SDPA, by the exactness policy (fp32: identical; fp16/bf16: identical, or a first divergence where
    the reference's top-1/top-2 margin is within the noise between two SDPA backends at that step)."""
    prompt = random_prompt(model, context - new_tokens, seed)
    with attention_implementation(model, "sdpa"):
        reference, reference_logits = hf_greedy(model, prompt, new_tokens)
    engine = FlashCoreEngine(model, max_batch_size=1, max_seq_len=context)
    tokens = engine.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[])[0, prompt.shape[1]:]
    del engine  # its cache: the size of the context
    dtype = next(model.parameters()).dtype
    row = {"kind": "engine-generation", "Skv": context, "prompt_len": prompt.shape[1], "new_tokens": new_tokens,
           "dtype": _dtype_name(dtype), "reference": "HF generate(), SDPA",
           "noise_backends": " vs ".join(b.name for b in backends)}
    differs = (tokens != reference).nonzero()
    if len(differs) == 0:
        return {**row, "identical": True, "first_divergence": None, "margin": None, "noise": None, "passed": True}
    step = int(differs[0])
    top2 = reference_logits[step].topk(2).values
    margin = (top2[0] - top2[1]).item()
    noise = backend_noise(model, torch.cat([prompt[0], reference[:step]])[None], backends)
    within = dtype != torch.float32 and margin <= noise
    return {**row, "identical": False, "first_divergence": step, "margin": margin, "noise": noise,
            "passed": within}


# ---------------------------------------------------------------------------------------- large magnitude

def large_magnitude_inputs(kind, pattern, heads, kv_len, dtype, device, seed=0):
    """q, k, v with max |q·k| about LARGE_QK (before the softmax scale). Patterns:
    "peaked": random q and k scaled up, so the softmax is nearly one-hot on the largest score;
    "shared-offset": q and k share one large direction, so every score is about LARGE_QK and the softmax rests
    on differences of a few units between huge scores (a kernel that forgot to subtract the row max, or kept
    scores in fp16, fails it)."""
    q_heads, kv_heads, head_dim = heads
    q_len = 1 if kind == "decode" else kv_len
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, q_heads, q_len, head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(1, kv_heads, kv_len, head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(1, kv_heads, kv_len, head_dim, generator=gen, dtype=torch.float64)
    if pattern == "peaked":
        group = q_heads // kv_heads
        largest = (q @ k.repeat_interleave(group, dim=1).transpose(-1, -2)).abs().max()
        q, k = q * (LARGE_QK / largest) ** 0.5, k * (LARGE_QK / largest) ** 0.5
    elif pattern == "shared-offset":
        direction = F.normalize(torch.randn(head_dim, generator=gen, dtype=torch.float64), dim=0)
        # scores = LARGE_QK + about 0.3 * 200 * (u·noise) terms: spread of a few logits once scaled by 1/sqrt(D)
        q, k = LARGE_QK ** 0.5 * direction + 0.3 * q, LARGE_QK ** 0.5 * direction + 0.3 * k
    else:
        raise ValueError(f"pattern must be 'peaked' or 'shared-offset', got {pattern!r}")
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


def large_magnitude_row(kind, pattern, heads, kv_len, dtype, device, seed=0):
    """One large-magnitude case through FlashCore's public prefill_attention / decode_attention: finite, and
    within the acceptance rule of the float64 reference. float32_err (PyTorch's attention in fp32) is recorded
    beside torch_err: with scores this large, PyTorch's fp16 attention is a loose yardstick."""
    q, k, v = large_magnitude_inputs(kind, pattern, heads, kv_len, dtype, device, seed)
    group = heads[0] // heads[1]
    max_qk = (q.double() @ k.double().repeat_interleave(group, dim=1).transpose(-1, -2)).abs().max().item()
    if kind == "decode":
        out = decode_attention(q, k, v)
    else:
        out = prefill_attention(q, k, v, causal=True)
    ref = attention_reference(q, k, v, causal=True)

    def error(x):
        return (x.double() - ref).abs().max().item()

    err = error(out)
    torch_err = error(attention_reference(q, k, v, causal=True, compute_dtype=dtype))
    float32_err = error(attention_reference(q, k, v, causal=True, compute_dtype=torch.float32))
    finite = bool(torch.isfinite(out).all())
    return {"kind": kind, "pattern": pattern, "dtype": _dtype_name(dtype), "B": 1, "Hq": heads[0], "Hkv": heads[1],
            "D": heads[2], "Sq": q.shape[2], "Skv": kv_len, "max_abs_qk": max_qk, "finite": finite, "err": err,
            "torch_err": torch_err, "float32_err": float32_err, "ratio": err / max(torch_err, ABS_SLACK),
            "passed": finite and _within_rule(err, torch_err)}


def large_magnitude_rows(plan, device):
    return [large_magnitude_row(kind, pattern, plan.magnitude_heads, length, dtype, device)
            for kind, length in (("prefill", plan.magnitude_prefill_len), ("decode", plan.magnitude_decode_len))
            for pattern in ("peaked", "shared-offset") for dtype in plan.magnitude_dtypes]


# ------------------------------------------------------------------------------------------------ summary

def _engine_memory_lines(row):
    """(headline line, missed lines) of the engine's memory row."""
    path, kv = row["path"], (f"KV cache {row['kv_cache_bytes']:,} bytes "
                             + ("= " if row["kv_cache_bytes"] == row["kv_cache_bytes_expected"] else "!= ")
                             + f"computed {row['kv_cache_bytes_expected']:,}")
    if not row["memory_measured"]:
        line = f"{path}: device memory not measured (no CUDA); {kv}"
    else:
        line = (f"{path}: {row['allocated_after_1000'] / 2**30:.3f} GiB allocated at step {row['steps']}, "
                f"{row['allocated_after_1000'] - row['allocated_after_10']:+,} bytes since step {row['early_step']}; "
                f"{kv}")
    missed = [] if row["passed"] else [
        f"{path}: memory not constant over {row['steps']} decode steps or KV cache bytes off ({kv}; allocated "
        f"{row['allocated_after_10']} -> {row['allocated_after_1000']}, spread {row['allocated_spread']})"]
    return line, missed


def _hf_memory_lines(row):
    """(headline line, missed lines) of the drop-in path's memory row; not measured is not missed."""
    path, steps, early = row["path"], row["steps"], row["early_step"]
    if not row["memory_measured"]:
        return f"{path}: device memory not measured (no CUDA)", []
    line = (f"{path}: from step {early} to {steps} memory grew by {row['growth']:,} bytes, {steps - early} x "
            f"({row['kv_bytes_per_token']:,} KV + {row['other_bytes_per_token']:g} of generate()'s own, measured "
            f"with SDPA) = {row['expected_growth']:,.0f} expected; leak {row['leak_bytes']:,.0f} bytes")
    missed = [] if row["passed"] else [
        f"{path}: {row['leak_bytes']:,.0f} bytes beyond the cache's growth over {steps} steps"]
    return line, missed


def _memory_lines(rows):
    headline, missed = [], []
    for row in rows:
        line, row_missed = (_engine_memory_lines if row["path"] == "flashcore-engine" else _hf_memory_lines)(row)
        headline.append(line)
        missed += row_missed
    return headline, missed


def _determinism_lines(rows):
    same = [r["path"] for r in rows if r["passed"]]
    headline = [f"{', '.join(same)}: {rows[0]['runs']} runs bitwise identical, tokens and logits"] if same else []
    missed = [f"{r['path']}: {r['runs']} runs differ (tokens identical: {r['identical_tokens']}, logits identical: "
              f"{r['identical_logits']})" for r in rows if not r["passed"]]
    return headline, missed


def _long_context_lines(rows):
    headline, missed = [], []
    for row in rows:
        if row["kind"] == "prefill":
            line = (f"causal prefill at {row['Skv']:,} keys ({row['dtype']}): error {row['err']:.3g}, "
                    f"{row['ratio']:.2f}x SDPA's")
        elif row["identical"]:
            line = (f"engine generation at a {row['Skv']:,}-token context: {row['new_tokens']}/{row['new_tokens']} "
                    f"tokens identical to HF SDPA")
        else:
            line = (f"engine generation at a {row['Skv']:,}-token context: first divergence at new token "
                    f"{row['first_divergence']}, reference margin {row['margin']:.3g} against noise {row['noise']:.3g}")
        headline.append(line)
        if not row["passed"]:
            missed.append(line)
    return headline, missed


def _magnitude_lines(rows):
    passed = sum(r["passed"] for r in rows)
    headline = [f"{passed}/{len(rows)} large-magnitude cases (|q·k| up to {max(r['max_abs_qk'] for r in rows):.3g}) "
                f"finite and within the rule; worst error ratio {max(r['ratio'] for r in rows):.2f}"]
    missed = [f"large magnitude {r['kind']} {r['pattern']} {r['dtype']}: "
              + (f"error {r['err']:.3g} against PyTorch's {r['torch_err']:.3g}" if r["finite"] else "non-finite output")
              for r in rows if not r["passed"]]
    return headline, missed


def reliability_summary(results):
    """Notebook 06: {"headline", "passed", "missed"} from its memory, determinism, long_context and
    large_magnitude rows. A row that could not be measured here (memory without CUDA) is said so, not missed."""
    headline, missed = [], []
    for key, lines in (("memory", _memory_lines), ("determinism", _determinism_lines),
                       ("long_context", _long_context_lines), ("large_magnitude", _magnitude_lines)):
        if results.get(key):
            more_headline, more_missed = lines(results[key])
            headline += more_headline
            missed += more_missed
        else:
            missed.append(f"no {key} rows")
    return {"headline": headline, "passed": not missed, "missed": missed}
