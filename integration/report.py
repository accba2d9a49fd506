"""Render the executed notebooks into HTML pages and write the report's index.

    python -m integration.report REPORT_DIR

REPORT_DIR holds notebooks/ (executed by papermill), results/*.json and figures/*.png. Every page written
opens from disk with no network (figures embedded, no script or stylesheet fetched) and shows no machine
paths. The index shows each results file's own "summary" as it is, so no code here knows a notebook.
"""
import json
import sys
from pathlib import Path

from integration import report_html
from integration.machine_paths import scrub_paths
from integration.notebook_pages import render_notebook
from integration.results import REPO_ROOT


def _figures_of(stem, figures):
    """Figures are named after their notebook's number: 02_layerwise_parity.png belongs to 02_*."""
    number = stem.split("_")[0]
    return [f for f in figures if f.name.split("_")[0] == number]


def index_body(results, figures, pages, not_run=()):
    """results: {stem: results dict}; figures: PNG paths; pages: names of the rendered notebook pages;
    not_run: stems of the project's notebooks that have no results file in this report."""
    environment = next((r["environment"] for r in results.values() if "environment" in r), {})
    commits = sorted({str(r["environment"].get("commit")) for r in results.values() if "environment" in r})
    parts = ["<h1>FlashCore report</h1>", report_html.environment_card(environment)]
    if len(commits) > 1:
        parts.append(f"<p><b>These results come from {len(commits)} commits:</b> {', '.join(commits)}</p>")

    parts += ["<h2>At a glance</h2>", report_html.at_a_glance(results)]
    parts.append("<h2>Summary</h2>")
    for stem, data in results.items():
        page = f"{stem}.html" if f"{stem}.html" in pages else None
        parts.append(report_html.notebook_section(stem, data, _figures_of(stem, figures), page))
    unclaimed = [f for f in figures if not any(f in _figures_of(stem, figures) for stem in results)]
    if unclaimed:
        parts += ["<h3>Figures of notebooks without a results file</h3>"]
        parts += [report_html.embedded_figure(f) for f in unclaimed]

    missed = {stem: (data["summary"]["missed"] if "summary" in data else ["no summary in its results file"])
              for stem, data in results.items()}
    missed.update({stem: ["not run for this report: no results file"] for stem in not_run})
    parts += ["<h2>What we did not meet</h2>", report_html.missed_list(missed)]

    runs = [run for data in results.values() for run in data.get("runs", []) if "reference_text" in run]
    if runs:
        parts += ["<h2>Generated text</h2>", report_html.generated_texts(runs)]

    tables = [(key, title, data[key]) for data in results.values()
              for key, title in report_html.PERFORMANCE_TABLES.items() if key in data]
    if tables:
        parts.append("<h2>Performance</h2>")
        for key, title, rows in tables:
            rows = rows if isinstance(rows, list) else [rows]  # a single record (kv_cache_bytes) is one row
            parts += [f"<h3>{title} <code>{key}</code></h3>", report_html.table(rows)]

    links = "".join(f'<li><a href="{name}">{name.removesuffix(".html")}</a></li>' for name in pages)
    parts += ["<h2>Notebooks</h2>", f"<ul>{links}</ul>"]
    return "\n".join(parts)


def build_report(report_dir):
    """Write REPORT_DIR/<notebook>.html for every executed notebook and REPORT_DIR/index.html; return the
    index's path."""
    report_dir = Path(report_dir)
    roots = (REPO_ROOT, report_dir.resolve())
    pages = []
    for notebook in sorted((report_dir / "notebooks").glob("0*.ipynb")):
        pages.append(f"{notebook.stem}.html")
        (report_dir / pages[-1]).write_text(render_notebook(notebook, roots))
    # scrubbed as text, before figures are embedded: base64 may spell anything, "/root/" included
    results = {p.stem: json.loads(scrub_paths(p.read_text(), roots))
               for p in sorted((report_dir / "results").glob("*.json"))}
    figures = sorted((report_dir / "figures").glob("*.png"))
    not_run = [p.stem for p in sorted((REPO_ROOT / "notebooks").glob("0*.ipynb")) if p.stem not in results]
    index = report_dir / "index.html"
    index.write_text(report_html.page("FlashCore report", index_body(results, figures, pages, not_run)))
    return index


if __name__ == "__main__":
    index = build_report(sys.argv[1] if len(sys.argv) > 1 else "report")
    print(f"report index written to {index}")
