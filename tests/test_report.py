"""The report builder: self-contained pages (figures embedded, nothing fetched, no machine paths) and an index
built from each results file's own summary."""
import html
import json
import os
import re
import shutil

import nbformat
import pytest

from integration import summaries
from integration.machine_paths import scrub_paths
from integration.notebook_pages import render_notebook
from integration.report import build_report
from integration.results import REPO_ROOT, write_results

PUBLISHED = REPO_ROOT / "report"


def _pages(report_dir):
    """Each page's text exactly as written (no newline translation: generated text may hold a carriage return)."""
    return {path.name: path.read_bytes().decode("utf-8") for path in report_dir.glob("*.html")}


def test_index_shows_each_summary_and_links_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_REPORT_DIR", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    shutil.copy(REPO_ROOT / "notebooks/01_kernel_unit_checks.ipynb", tmp_path / "notebooks")
    cases = [{"kind": "decode", "B": 1, "Hq": 4, "Hkv": 2, "D": 64, "Sq": 1, "Skv": 7, "dtype": "float16",
              "err": e, "torch_err": 1e-3, "ratio": e / 1e-3, "passed": ok} for e, ok in ((1e-3, True), (5e-3, False))]
    bad = [{"case": "query rank 3", "error": "ValueError: query must have rank 4", "clear": True}]
    path = write_results("01_kernel_unit_checks",
                         {"cases": cases, "bad_inputs": bad, "summary": summaries.kernel_checks(cases, bad)},
                         {"seed": 0})
    header = json.loads(path.read_text())["environment"]
    assert {"device", "driver", "torch", "triton", "transformers", "cuda", "date", "commit", "params"} <= set(header)

    index = build_report(tmp_path).read_text()
    assert "1/2 kernel cases within" in index and "1/1 bad inputs" in index
    assert "decode B=1 Hq=4 Hkv=2 D=64 Sq=1 Skv=7 float16: error 0.005" in index  # under "what we did not meet"
    assert 'href="01_kernel_unit_checks.html"' in index
    assert (tmp_path / "01_kernel_unit_checks.html").stat().st_size > 1000


def test_a_file_without_summary_is_reported_as_such(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results/09_new.json").write_text(json.dumps({"environment": {"commit": "abc"}, "rows": [1]}))
    index = build_report(tmp_path).read_text()
    assert "09_new</b>: no summary in its results file" in index
    assert '<b>09_new</b> <span class="verdict none">no summary</span> no summary in its results file' in index


def test_at_a_glance_lists_each_notebooks_first_headline_line(tmp_path):
    (tmp_path / "results").mkdir()
    for stem, passed in (("01_a", True), ("02_b", False)):
        summary = {"headline": [f"{stem} verdict", f"{stem} detail"], "passed": passed,
                   "missed": [] if passed else ["x"]}
        (tmp_path / f"results/{stem}.json").write_text(json.dumps({"environment": {}, "summary": summary}))
    index = build_report(tmp_path).read_text()
    glance = index[index.index("At a glance"):index.index("<h2>Summary")]
    assert '<b>01_a</b> <span class="verdict pass">passed</span> 01_a verdict' in glance
    assert '<b>02_b</b> <span class="verdict fail">missed targets</span> 02_b verdict' in glance
    assert "detail" not in glance


@pytest.fixture(scope="module")
def published_copy(tmp_path_factory):
    """The committed GPU report, re-rendered into a temporary folder."""
    report_dir = tmp_path_factory.mktemp("report")
    for part in ("results", "notebooks", "figures"):
        shutil.copytree(PUBLISHED / part, report_dir / part)
    build_report(report_dir)
    return report_dir


def test_published_report_embeds_every_figure(published_copy):
    pages = _pages(published_copy)
    assert {f"{nb.stem}.html" for nb in (published_copy / "notebooks").glob("0*.ipynb")} | {"index.html"} == set(pages)
    for name, text in pages.items():
        sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
        assert all(src.startswith("data:image/") for src in sources), (name, [s[:40] for s in sources])
    figures = sorted((published_copy / "figures").glob("*.png"))
    assert figures and pages["index.html"].count('src="data:image/png;base64,') == len(figures)


def test_published_report_fetches_nothing(published_copy):
    for name, text in _pages(published_copy).items():
        remote = re.findall(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["\']?(?:https?:)?//', text)
        assert not remote, (name, remote)
        assert not re.search(r'import\s*\(\s*["\']https?://', text), name  # no module loaded by script either
        assert not re.search(r'url\(\s*["\']?https?://', text), name  # nor a font or image by a stylesheet


def test_published_report_shows_no_machine_paths_or_stderr(published_copy):
    for name, text in _pages(published_copy).items():
        for machine_path in (str(REPO_ROOT), "/root/", "site-packages"):
            assert machine_path not in text, (name, machine_path)
        assert 'data-mime-type="application/vnd.jupyter.stderr"' not in text, name


def test_generated_text_highlights_from_the_first_difference(published_copy):
    runs = json.loads((published_copy / "results/03_full_generation.json").read_text())["runs"]
    index = _pages(published_copy)["index.html"]
    diverged = [r for r in runs if r["text"] != r["reference_text"]]
    assert diverged
    for run in diverged:
        rest = run["text"][len(os.path.commonprefix([run["text"], run["reference_text"]])):]
        assert f"<mark>{html.escape(rest)}</mark>" in index, run["prompt"]


def test_set_up_cells_are_folded_not_dropped():
    notebook = REPO_ROOT / "notebooks/01_kernel_unit_checks.ipynb"
    tagged = [c for c in nbformat.read(notebook, as_version=4).cells if "hide-input" in c.metadata.get("tags", [])]
    folded = re.findall(r'<details class="hidden-input"><summary>show code</summary>\s*<div class="jp-Cell-input',
                        render_notebook(notebook, [REPO_ROOT]))
    assert tagged and len(folded) == len(tagged)  # the code is still in the page, one click away


def test_scrub_paths_keeps_package_relative_paths():
    text = ("/opt/x/.venv/lib/python3.12/site-packages/tqdm/auto.py:21: TqdmWarning\n"
            f"results written to {REPO_ROOT}/report/results/01.json; cache in /root/.cache/hf")
    assert scrub_paths(text, [REPO_ROOT]) == ("tqdm/auto.py:21: TqdmWarning\n"
                                              "results written to report/results/01.json; cache in ~/.cache/hf")


def test_notebooks_without_results_are_listed_as_not_met():
    from integration.report import index_body

    body = index_body({}, [], [], not_run=["04_decode_sweep"])
    assert "04_decode_sweep</b>: not run for this report" in body
