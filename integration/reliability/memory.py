"""Device memory over long decodes: the engine allocates up front (constant memory), the drop-in path's
DynamicCache grows by exactly the KV bytes of each new token (no leak)."""
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from integration.bench import kv_bytes_per_token
from integration.llama_flashcore import attention_implementation


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
