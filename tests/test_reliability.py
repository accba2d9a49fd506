"""Notebook 06's reliability checks on the tiny Llama and small kernel cases: large-magnitude inputs, the engine's
memory and KV-cache size, determinism of both paths, and the summary's verdicts. On CUDA the memory counters are
read too; without it, what does not need them."""
import pytest
import torch

from conftest import ON_GPU
from integration import reliability, summaries
from integration.reliability import determinism, magnitude
from integration.engine import FlashCoreEngine
from integration.models import tiny_llama

STEPS, EARLY = 4, 2


@pytest.fixture(scope="module")
def model():
    return tiny_llama(dtype=torch.float32, device="cuda" if ON_GPU else "cpu")


@pytest.fixture(scope="module")
def prompt(model):
    return reliability.random_prompt(model, 8)


@pytest.fixture(scope="module")
def engine(model):
    return FlashCoreEngine(model, max_batch_size=2, max_seq_len=8 + STEPS)


@pytest.mark.parametrize("kind, length", [("prefill", 96), ("decode", 200)])
@pytest.mark.parametrize("pattern", ["peaked", "shared-offset"])
def test_large_magnitude_is_finite_and_within_the_rule(device, kind, length, pattern):
    row = reliability.large_magnitude_row(kind, pattern, (8, 2, 64), length, torch.float16, device)
    assert 0.9 * reliability.LARGE_QK < row["max_abs_qk"] < 65504  # near fp16 overflow, not past it
    assert row["finite"] and row["passed"], row


def test_large_magnitude_check_can_fail(device, monkeypatch):
    """A decode attention that does not subtract the row max before exp() overflows on these scores: caught."""
    def without_max_subtraction(q, k, v):
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1).float() for t in (k, v))
        weights = torch.exp(q.float() @ k.transpose(-1, -2) * q.shape[-1] ** -0.5)  # inf past a score of ~88
        return (weights / weights.sum(-1, keepdim=True) @ v).to(q.dtype)
    monkeypatch.setattr(magnitude, "decode_attention", without_max_subtraction)
    row = reliability.large_magnitude_row("decode", "shared-offset", (8, 2, 64), 200, torch.float16, device)
    assert not row["finite"] and not row["passed"]


def test_engine_memory_and_kv_cache_bytes(model, engine, prompt):
    row = reliability.engine_memory_row(engine, prompt, STEPS, EARLY)
    layers, kv_heads, head_dim = 2, 2, 64  # tiny_llama_config
    assert row["kv_cache_bytes"] == 2 * layers * kv_heads * head_dim * (8 + STEPS) * 4 * 2  # fp32, batch 2
    assert row["kv_cache_bytes"] == row["kv_cache_bytes_expected"]
    assert row["memory_measured"] == ON_GPU
    if ON_GPU:
        assert row["allocated_after_10"] == row["allocated_after_1000"] and row["allocated_spread"] == 0
    assert row["passed"], row


def test_engine_is_deterministic(engine, prompt):
    row = reliability.engine_determinism_row(engine, prompt, 3, runs=3)
    assert row["identical_tokens"] and row["identical_logits"] and row["passed"], row


def test_engine_determinism_check_sees_a_changed_cache(engine, prompt, monkeypatch):
    """Perturb the cache after the second run: the comparison must notice it."""
    real, runs = determinism._engine_snapshot, []

    def perturbed(engine, input_ids, new_tokens):
        snapshot = real(engine, input_ids, new_tokens)
        runs.append(snapshot)
        if len(runs) == 2:
            snapshot[1][1][0, 0, 0, 0] += 1
        return snapshot
    monkeypatch.setattr(determinism, "_engine_snapshot", perturbed)
    row = reliability.engine_determinism_row(engine, prompt, 2, runs=2)
    assert row["identical_tokens"] and not row["identical_logits"] and not row["passed"]


def test_drop_in_path_is_deterministic(model, prompt):
    row = reliability.hf_determinism_row(model, prompt, 4, runs=3)
    assert row["identical_tokens"] and row["identical_logits"] and row["passed"], row
    assert model.config._attn_implementation == "sdpa"  # switched back afterwards


@pytest.mark.gpu
def test_drop_in_memory_grows_only_by_the_cache(model, prompt):
    row = reliability.hf_memory_row(model, prompt, 40, 10, baseline_steps=20)
    assert row["leak_bytes"] == 0 and row["passed"], row


def test_drop_in_memory_row_without_cuda_is_unmeasured(model, prompt):
    if ON_GPU:
        pytest.skip("CUDA's counters are there: test_drop_in_memory_grows_only_by_the_cache reads them")
    row = reliability.hf_memory_row(model, prompt, 3, 1, baseline_steps=1)
    assert not row["memory_measured"] and row["passed"] is None and row["growth"] is None


def test_cache_growth_verdict_flags_a_leak():
    kv, other = 131072, 32
    baseline = 100 * (kv + other)
    exact = reliability.cache_growth_verdict(990 * (kv + other), 990, kv, baseline, 100)
    assert exact["passed"] and exact["leak_bytes"] == 0 and exact["other_bytes_per_token"] == other
    leaking = reliability.cache_growth_verdict(990 * (kv + other) + 512, 990, kv, baseline, 100)
    assert not leaking["passed"] and leaking["leak_bytes"] == 512
    assert reliability.cache_growth_verdict(None, 990, kv, None, 100)["passed"] is None


def test_prefill_long_context_row_on_a_small_case(device):
    row = reliability.prefill_long_context_row(128, 48, heads=(8, 2, 64), device=device)  # 48: a ragged last chunk
    assert row["passed"] and row["err"] > 0, row


def test_backend_noise_is_small_and_restores_attention(prompt):
    # fp16 on CUDA, where SDPA's flash backend has no fp32; fp32 on the CPU, as the smoke plan runs it
    model = tiny_llama(dtype=torch.float16 if ON_GPU else torch.float32, device=prompt.device)
    noise = reliability.backend_noise(model, prompt, reliability.reliability_plan().noise_backends)
    assert 0 <= noise < (0.1 if ON_GPU else 1e-4)  # rounding noise: far below one logit
    assert model.config._attn_implementation == "sdpa"


def _results():
    memory = [{"path": "flashcore-engine", "steps": 1000, "early_step": 10, "memory_measured": True,
               "allocated_after_10": 2**34, "allocated_after_1000": 2**34, "allocated_spread": 0,
               "kv_cache_bytes": 1024, "kv_cache_bytes_expected": 1024, "passed": True},
              {"path": "hf-flashcore", "steps": 1000, "early_step": 10, "memory_measured": True,
               "growth": 990 * 131104, "expected_growth": 990 * 131104.0, "leak_bytes": 0.0,
               "kv_bytes_per_token": 131072, "other_bytes_per_token": 32.0, "passed": True}]
    determinism = [{"path": "flashcore-engine", "runs": 3, "identical_tokens": True, "identical_logits": True,
                    "passed": True}]
    long_context = [{"kind": "prefill", "Skv": 32768, "dtype": "float16", "err": 1e-3, "ratio": 1.0, "passed": True},
                    {"kind": "engine-generation", "Skv": 32768, "new_tokens": 32, "identical": True, "passed": True}]
    magnitude = [{"kind": "decode", "pattern": "peaked", "dtype": "float16", "max_abs_qk": 4e4, "finite": True,
                  "err": 1e-3, "torch_err": 1e-2, "ratio": 0.1, "passed": True}]
    return {"memory": memory, "determinism": determinism, "long_context": long_context,
            "large_magnitude": magnitude}


def test_summary_passes_when_every_row_passes():
    summary = summaries.reliability(_results())
    assert summary["passed"] and summary["missed"] == []
    assert summary["headline"][0] == "memory, determinism, long context and large magnitudes: every check met"
    assert len(summary["headline"]) == 7


@pytest.mark.parametrize("key, index, change", [
    ("memory", 1, {"growth": 990 * 131104 + 512, "leak_bytes": 512.0, "passed": False}),
    ("determinism", 0, {"identical_logits": False, "passed": False}),
    ("long_context", 1, {"identical": False, "first_divergence": 3, "margin": 0.5, "noise": 0.1, "passed": False}),
    ("large_magnitude", 0, {"finite": False, "passed": False}),
])
def test_summary_marks_a_failed_row_as_missed(key, index, change):
    results = _results()
    results[key][index] = {**results[key][index], **change}
    summary = summaries.reliability(results)
    assert not summary["passed"] and len(summary["missed"]) == 1
    assert summary["headline"][0].endswith(": 1 missed")


def test_summary_misses_a_missing_check_but_not_unmeasured_memory():
    results = _results()
    results["memory"][1] = {**results["memory"][1], "memory_measured": False, "growth": None, "leak_bytes": None,
                            "passed": None}
    assert summaries.reliability(results)["passed"]
    del results["determinism"]
    assert summaries.reliability(results)["missed"] == ["no determinism rows"]
