"""The report builder: rendered notebooks and an index summarising each results file from its own numbers."""
import json
import shutil
from pathlib import Path

from integration.report import build_report
from integration.results import write_results


def test_index_summarises_results_and_links_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASHCORE_REPORT_DIR", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    shutil.copy(Path(__file__).parent.parent / "notebooks/01_kernel_unit_checks.ipynb", tmp_path / "notebooks")
    cases = [{"passed": True}, {"passed": False}]
    path = write_results("01_kernel_unit_checks", {"cases": cases, "bad_inputs": [{"clear": True}]}, {"seed": 0})
    header = json.loads(path.read_text())["environment"]
    assert {"device", "torch", "triton", "transformers", "cuda", "date", "commit", "params"} <= set(header)

    index = build_report(tmp_path).read_text()
    assert "1/2 kernel cases pass" in index and "1/1 bad inputs" in index
    assert 'href="01_kernel_unit_checks.html"' in index
    assert (tmp_path / "01_kernel_unit_checks.html").stat().st_size > 1000
