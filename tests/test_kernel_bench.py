"""The benchmark's side-by-side cases compute the same attention on both sides, so their times compare like with
like, and the from-Python timer counts what a call costs the host."""
import time

import torch

from integration import timing
from integration.kernel_bench import prefill_cases


def test_prefill_cases_give_flashcore_and_sdpa_the_same_attention(device):
    torch.manual_seed(0)
    cases = prefill_cases(device, torch.float32, q_heads=4, kv_heads=2, head_dim=16, padded=(48, 40, 17),
                          chunk=(24, 70))
    assert [name for name, *_ in cases] == ["padded-batch", "chunked"]
    for name, shape, flashcore_fn, sdpa_fn, flops in cases:
        ours, theirs = flashcore_fn(), sdpa_fn()
        # a query left of its sequence's first key sees nothing: zeros from FlashCore, NaN from SDPA
        assert torch.allclose(ours, torch.nan_to_num(theirs), atol=1e-5), name
        assert flops > 0
    padded_flops, chunked_flops = cases[0][4], cases[1][4]
    assert padded_flops == sum(4 * n * n / 2 * 16 * 4 for n in (48, 40, 17))
    assert chunked_flops == 4 * (24 * 46 + 24 * 24 / 2) * 16 * 4


def test_a_call_from_python_counts_the_host_time_of_each_call(monkeypatch):
    """time_python_ms times whole runs of back-to-back calls and divides by the calls a run makes, so a host cost
    per call shows in full (here a 2 ms sleep per call, on the host clock the CPU path uses)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    made = []

    def run():  # one run: four calls of 2 ms each
        for _ in range(4):
            time.sleep(0.002)
            made.append(1)

    result = timing.time_python_ms(run, calls_per_run=4, repeats=5)
    assert len(made) == 4 * (5 + 3)  # the runs timed and the warm-up runs
    assert 2.0 <= result["ms"] < 4.0, result


def test_side_by_side_timings_take_turns(monkeypatch):
    """Functions compared side by side are timed in alternation, one call of each per round, so a drift during the
    measurement reaches both; each gets its own statistics."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    order = []

    def fast():
        order.append("fast")

    def slow():
        order.append("slow")
        time.sleep(0.003)

    result = timing.time_side_by_side_ms({"fast": fast, "slow": slow}, repeats=4, warmup=1)
    assert order == ["fast", "slow"] * 5  # the warm-up round, then four timed rounds
    assert result["fast"]["ms"] < 1.0 <= 3.0 <= result["slow"]["ms"] < 6.0, result
    assert set(result["slow"]) == {"ms", "ms_p10", "ms_p90"}


def test_compile_times_are_rounds_in_flipping_order(monkeypatch):
    """Notebook 05 compiles each implementation twice, cold, in an order that flips every round; a row gives the
    mean and each round, and the most graphs any round recompiled."""
    from integration import bench

    order = []
    samples = {"sdpa": iter([30.0, 26.0]), "flashcore": iter([28.0, 33.0])}

    def fake_run(model, implementation, prompt_len):
        import torch._inductor.config
        assert torch._inductor.config.force_disable_caches, "each compile must be a cold one"
        order.append(implementation)
        return {"compile_s": next(samples[implementation]), "ms_per_token": 9.0,
                "recompiles_new_shapes": int(len(order) == 4)}

    monkeypatch.setattr(bench, "_compiled_generate_run", fake_run)
    rows = bench.hf_compile_rows(None, prompt_len=64, log=lambda *a: None)
    assert order == ["sdpa", "flashcore", "flashcore", "sdpa"]
    assert rows[0] == {"path": "hf-compile-sdpa", "cache_len": 64, "compile_s": 28.0, "compile_s_rounds": [30.0, 26.0],
                       "ms_per_token": 9.0, "recompiles_new_shapes": 1}
    assert rows[1]["compile_s"] == 30.5 and rows[1]["recompiles_new_shapes"] == 0
