"""The README's results table says what the published results files say: each figure is recomputed from
report/results/*.json and must appear in the README as written there."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _results(stem):
    return json.loads((ROOT / "report" / "results" / f"{stem}.json").read_text())


def _identical(runs, model, mode):
    rows = [r for r in runs if r["model"] == model and r["mode"] == mode]
    return f"{sum(r['identical'] for r in rows)}/{len(rows)}"


def test_readme_figures_are_the_published_results():
    readme = (ROOT / "README.md").read_text()
    kernels = _results("01_kernel_unit_checks")
    parity = _results("02_layerwise_parity")
    generation = _results("03_full_generation")["runs"]
    cases, bad = kernels["cases"], kernels["bad_inputs"]
    divergent = [r for r in generation if not r["identical"]]
    expected = [
        f"{sum(c['passed'] for c in cases)}/{len(cases)} cases",
        f"worst ratio {max(c['ratio'] for c in cases):.2f}",
        f"{sum(b['clear'] for b in bad)}/{len(bad)} bad inputs",
        f"built on the GPU in {parity['build_seconds']:.2f} s",
        f"at most {max(r['ratio'] for r in parity['layers']):.2f}× SDPA's",
        f"SmolLM2-135M: {_identical(generation, 'smollm2-135m-instruct', 'single')} prompts",
        f"{_identical(generation, 'llama-3.1-8b-shape', 'single')} identical alone",
        f"{_identical(generation, 'llama-3.1-8b-shape', 'padded-batch')} in the padded batch",
        f"margin of {min(r['margin'] for r in divergent):g}–{max(r['margin'] for r in divergent):.3f} logits",
        f"noise ({min(r['noise'] for r in divergent):.3f}–{max(r['noise'] for r in divergent):.3f})",
    ]
    missing = [figure for figure in expected if figure not in readme]
    assert not missing, f"README figures that differ from report/results: {missing}"
