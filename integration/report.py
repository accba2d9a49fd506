"""Render the executed notebooks into HTML and write the report's index page.

    python -m integration.report REPORT_DIR

REPORT_DIR holds notebooks/ (executed by papermill), results/*.json and figures/*.png. The index summarises
each results file from its own numbers and links every rendered notebook.
"""
import html
import json
import sys
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter


def _summary(stem, results):
    """One line per results file, computed from what the notebook recorded."""
    if "cases" in results:
        cases, bad = results["cases"], results.get("bad_inputs", [])
        return (f"{sum(c['passed'] for c in cases)}/{len(cases)} kernel cases pass the FlashAttention rule; "
                f"{sum(b['clear'] for b in bad)}/{len(bad)} bad inputs get a clear error")
    if "layers" in results:
        worst = max(r["ratio"] for r in results["layers"])
        return (f"{results.get('model')}: passed={results.get('passed')}, worst FlashCore/SDPA error ratio "
                f"{worst:.2f} over {len(results['layers'])} layer rows")
    if "runs" in results:
        runs = results["runs"]
        return (f"{sum(r['identical'] for r in runs)}/{len(runs)} generations token-identical to the SDPA "
                f"reference; {sum(r['passed'] for r in runs)}/{len(runs)} pass")
    return ", ".join(k for k in results if k != "environment")


def build_report(report_dir):
    report_dir = Path(report_dir)
    exporter = HTMLExporter()
    links = []
    for notebook in sorted((report_dir / "notebooks").glob("0*.ipynb")):
        body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
        (report_dir / f"{notebook.stem}.html").write_text(body)
        links.append(f'<li><a href="{notebook.stem}.html">{html.escape(notebook.stem)}</a></li>')

    rows, environment = [], None
    for path in sorted((report_dir / "results").glob("*.json")):
        results = json.loads(path.read_text())
        environment = environment or results.get("environment")
        rows.append(f"<tr><td>{html.escape(path.stem)}</td><td>{html.escape(_summary(path.stem, results))}</td>"
                    f'<td><a href="results/{path.name}">{path.name}</a></td></tr>')
    figures = [f'<figure><img src="figures/{p.name}" style="max-width:60%"><figcaption>{p.stem}</figcaption>'
               "</figure>" for p in sorted((report_dir / "figures").glob("*.png"))]
    env = "" if environment is None else html.escape(
        ", ".join(f"{k}: {environment.get(k)}" for k in ("device", "torch", "triton", "transformers", "cuda",
                                                          "date", "commit")))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FlashCore report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
figure{{display:inline-block;margin:0 0 1em 0;width:100%}}</style></head><body>
<h1>FlashCore report</h1>
<p>{env}</p>
<h2>Results</h2><table><tr><th>notebook</th><th>summary</th><th>data</th></tr>{''.join(rows)}</table>
<h2>Notebooks</h2><ul>{''.join(links)}</ul>
<h2>Figures</h2>{''.join(figures)}
</body></html>
"""
    (report_dir / "index.html").write_text(page)
    return report_dir / "index.html"


if __name__ == "__main__":
    print(f"report index written to {build_report(sys.argv[1] if len(sys.argv) > 1 else 'report')}")
