"""Each notebook's summary: computed from its rows, passed only when nothing is missed."""
from integration import summaries


def _case(err, passed):
    return {"kind": "prefill", "B": 2, "Hq": 8, "Hkv": 2, "D": 64, "Sq": 129, "Skv": 129, "dtype": "float16",
            "err": err, "torch_err": 1e-3, "ratio": err / 1e-3, "passed": passed}


def test_kernel_checks_lists_failures_capped():
    cases = [_case(1e-3, True)] + [_case(9e-3, False)] * (summaries.MAX_LISTED + 3)
    bad = [{"case": "query rank 3", "error": "ValueError: bad", "clear": False}]
    summary = summaries.kernel_checks(cases, bad)
    assert not summary["passed"]
    assert summary["headline"][0].startswith(f"1/{len(cases)} kernel cases within")
    assert summary["missed"][summaries.MAX_LISTED] == "... and 3 more like these"
    assert summary["missed"][-1] == "bad input 'query rank 3' gets an unclear error: ValueError: bad"


def test_layerwise_parity_names_the_failing_layer():
    layers = [{"phase": "prefill", "layer": i, "flashcore_err": 0.1, "sdpa_err": 0.1, "ratio": 1.0, "passed": True}
              for i in range(3)]
    assert summaries.layerwise_parity("tiny", "float16", layers)["passed"]
    layers[2] = {**layers[2], "flashcore_err": 0.5, "ratio": 5.0, "passed": False}
    summary = summaries.layerwise_parity("tiny", "float16", layers)
    assert not summary["passed"]
    assert summary["missed"] == ["tiny prefill layer 2: FlashCore error 0.5 against SDPA's 0.1"]


def _run(identical, passed=True, **fields):
    divergence = {} if identical else {"first_divergence": 3, "margin": 0.01, "noise": 0.05}
    return {"model": "m", "mode": "single", "prompt": "p", "new_tokens": 6, "identical": identical,
            "passed": passed, "first_divergence": None, "margin": None, "noise": None, **divergence, **fields}


def test_full_generation_applies_the_exactness_policy():
    agreement = [{"model": "m", "eager_identical_to_sdpa": False}]
    fp16 = summaries.full_generation([_run(True), _run(False)], agreement, "float16")
    assert fp16["headline"][0] == "float16: 1/2 identical, 1/1 divergences within the measured noise"  # the verdict
    assert fp16["passed"] and "1/2 token-identical" in fp16["headline"][1]
    assert "1/1 divergences within the measured noise" in fp16["headline"][1]
    assert "reproduces SDPA's tokens on 0/1 m prompts" in fp16["headline"][2]
    beyond = summaries.full_generation([_run(False, passed=False)], agreement, "float16")
    assert not beyond["passed"] and "exceeds the measured noise" in beyond["missed"][0]
    # in fp32 any divergence is missed, even one within the noise; a row's own dtype wins over the notebook's
    fp32 = summaries.full_generation([_run(False, dtype="float32")], agreement, "float16")
    assert not fp32["passed"] and "not token-identical in float32" in fp32["missed"][0]
    assert fp32["headline"][0] == "float32: 0/1 generations token-identical to SDPA"


def _sweep(engine_ms):
    floor = 5.0
    return {
        "copy_bandwidth_TBps": 3.0,
        "decode": [{"cache_len": 2048, "batch": 1, "path": "flashcore-engine", "ms_per_token": engine_ms,
                    "floor_ms": floor, "ratio_to_floor": engine_ms / floor},
                   {"cache_len": 2048, "batch": 1, "path": "hf-static-graph-sdpa", "ms_per_token": 10.5,
                    "floor_ms": floor, "ratio_to_floor": 2.1},
                   {"cache_len": 131072, "batch": 1, "path": "hf-eager-sdpa", "skipped": "out of memory"}],
        "batch_sweep": [{"batch": 1, "cache_len": 2048, "ms_per_step": engine_ms},
                        {"batch": 8, "cache_len": 2048, "ms_per_step": 1.2 * engine_ms}],
        "gemv": [{"shape": "4096x4096", "M": 1, "flashcore_us": 12.0, "cublas_us": 13.0, "bandwidth_fraction": 0.85}],
    }


def test_decode_sweep_against_the_targets():
    met = summaries.decode_sweep(_sweep(5.5), check_targets=True)
    assert met["passed"], met["missed"]
    assert met["headline"][0].startswith(  # the verdict line comes first
        "decode at cache 2048, batch 1: flashcore-engine 5.50 ms/token, 1.100x the 5.00 ms floor; fastest SDPA "
        "path hf-static-graph-sdpa")
    missed = summaries.decode_sweep(_sweep(6.5), check_targets=True)
    assert missed["missed"] == ["engine decode at cache 2,048: 1.300x the floor (target 1.15x)"]
    assert summaries.decode_sweep(_sweep(6.5), check_targets=False)["passed"]


def test_engine_target_is_judged_on_its_repeat_at_the_end_too():
    results = _sweep(5.5)
    results["engine_repeat"] = [{**results["decode"][0], "ms_per_token": 5.9, "ratio_to_floor": 5.9 / 5.0}]
    summary = summaries.decode_sweep(results, check_targets=True)
    assert "engine at cache 2,048 again at the end of the run: 5.90 ms/token (1.180x), +7.3% from the sweep's 5.50" \
        in summary["headline"]
    assert summary["missed"] == ["engine decode at cache 2,048 (measured again at the end of the run): 1.180x the "
                                 "floor (target 1.15x)"]


def test_time_to_first_token_is_shown_and_judged_at_8192():
    rows = [{"prompt_len": n, "path": path, "ms": ms} for n, path, ms in
            ((2048, "hf-sdpa", 68.9), (2048, "flashcore-engine", 49.0), (8192, "hf-sdpa", 272.9),
             (8192, "flashcore-engine", 280.1))]
    summary = summaries.decode_sweep({**_sweep(5.5), "time_to_first_token": rows}, check_targets=True)
    assert "time to first token, engine against HF generate() with SDPA: 2,048: 49.0 ms against 68.9, 8,192: 280.1 " \
        "ms against 272.9" in summary["headline"]
    assert summary["missed"] == ["time to first token at 8192 (flashcore-engine): 280.1 ms against SDPA's 272.9 ms"]


def test_a_decode_attention_miss_shows_both_spreads():
    """A row timed side by side records each timing's 10th and 90th percentiles; a miss quotes them, so a reader
    tells a tie within the spread from a loss beyond it."""
    row = {"cache_len": 4096, "batch": 8, "flashcore_us": 40.14, "sdpa_gqa_us": 40.10, "flashcore_graph_us": 39.0,
           "sdpa_graph_us": 39.5, "flashcore_us_p10": 39.8, "flashcore_us_p90": 40.5, "sdpa_gqa_us_p10": 39.9,
           "sdpa_gqa_us_p90": 40.4}
    results = {**_sweep(5.5), "decode_attention": [row]}
    assert summaries.decode_sweep(results, check_targets=True)["missed"] == [
        "decode attention at cache 4,096, batch 8: 40.1 us from Python against SDPA's 40.1 (10th-90th percentiles "
        "39.8-40.5 against 39.9-40.4)"]
    del row["sdpa_gqa_us_p90"]  # a row from before the percentiles were recorded: the bare times
    assert summaries.decode_sweep(results, check_targets=True)["missed"] == [
        "decode attention at cache 4,096, batch 8: 40.1 us from Python against SDPA's 40.1"]


def test_a_gemv_miss_against_cublas_shows_both_spreads():
    """The GEMV rows are timed side by side with cuBLAS too: a miss quotes both timings' percentiles."""
    row = {"shape": "14336x4096", "M": 4, "flashcore_us": 31.84, "cublas_us": 31.81, "bandwidth_fraction": 0.9,
           "flashcore_us_p10": 31.6, "flashcore_us_p90": 32.1, "cublas_us_p10": 31.5, "cublas_us_p90": 32.2}
    results = {**_sweep(5.5), "gemv": [row]}
    assert summaries.decode_sweep(results, check_targets=True)["missed"] == [
        "GEMV 14336x4096 at M=4: 31.84 us, slower than cuBLAS's 31.81 (10th-90th percentiles 31.6-32.1 against "
        "31.5-32.2)"]


def test_a_miss_just_past_its_target_does_not_read_as_the_target():
    """Misses carry one digit more than their targets: 89.6% of copy bandwidth is not printed as 90%."""
    rows = [{"shape": "4096x14336", "M": 1, "flashcore_us": 31.35, "cublas_us": 33.66, "bandwidth_fraction": 0.8962},
            {"shape": "4096x4096", "M": 1, "flashcore_us": 9.94, "cublas_us": 14.17, "bandwidth_fraction": 0.808},
            {"shape": "4096x4096", "M": 8, "flashcore_us": 11.45, "cublas_us": 14.32, "bandwidth_fraction": 0.703}]
    assert summaries.decode_sweep({**_sweep(5.5), "gemv": rows}, check_targets=True)["missed"] == [
        "GEMV 4096x14336 at M=1: 89.6% of copy bandwidth (target 90%)",
        "GEMV 4096x4096 at M=8: 11.45 us, 1.152x its M=1 time (target 1.15x)"]


def test_a_reference_gemv_shape_is_shown_but_judged_by_no_target():
    """1024x4096 (k or v alone) is timed for reference only: the engine runs k and v merged into QKV."""
    rows = [{"shape": shape, "M": m, "flashcore_us": us, "cublas_us": cublas, "bandwidth_fraction": 0.5}
            for shape in ("1024x4096", "4096x4096") for m, us, cublas in ((1, 3.82, 7.84), (8, 5.63, 7.91))]
    summary = summaries.decode_sweep({**_sweep(5.5), "gemv": rows}, check_targets=True)
    assert summary["missed"] == ["GEMV 4096x4096 at M=1: 50.0% of copy bandwidth (target 80%)",
                                 "GEMV 4096x4096 at M=8: 5.63 us, 1.474x its M=1 time (target 1.15x)"]
    assert "GEMV 1024x4096, timed for reference (the engine runs k and v merged into QKV): M=1 3.82 us (cuBLAS " \
        "7.84), M=8 5.63 us, 1.47x M=1's (cuBLAS 7.91)" in summary["headline"]


def test_hf_compile_puts_the_comparison_first_and_misses_a_recompile():
    rows = [{"path": "hf-compile-sdpa", "cache_len": 2048, "compile_s": 30.0, "ms_per_token": 9.0,
             "recompiles_new_shapes": 0},
            {"path": "hf-compile-flashcore", "cache_len": 2048, "compile_s": 25.0, "ms_per_token": 8.5,
             "recompiles_new_shapes": 0}]
    summary = summaries.hf_compile(rows, check_targets=True)
    assert summary["passed"]
    assert summary["headline"][0] == ("compiled generate() at cache 2048: FlashCore 8.50 ms/token against SDPA's "
                                      "9.00, compiled in 25.0 s against 30.0 s, 0 recompiles for new shapes")
    rounds = [{**rows[0], "compile_s_rounds": [31.0, 29.0]}, {**rows[1], "compile_s_rounds": [24.0, 26.0]}]
    assert summaries.hf_compile(rounds, check_targets=True)["headline"][0] == (
        "compiled generate() at cache 2048: FlashCore 8.50 ms/token against SDPA's 9.00, compiled in 25.0 s (24.0, "
        "26.0) against 30.0 s (31.0, 29.0), 0 recompiles for new shapes")
    rows[1] = {**rows[1], "recompiles_new_shapes": 2}
    assert summaries.hf_compile(rows, check_targets=True)["missed"] == [
        "hf-compile-flashcore recompiled 2 graphs for new shapes (target 0)"]
