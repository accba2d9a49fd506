"""The pieces of the report's index page, each a function from recorded data to an HTML string. Nothing here
knows a notebook by name: sections are built from the keys the results files carry (RESULTS.md)."""
import base64
import html
import os

# Tables of rows the index shows wherever a results file carries them, with what each measures.
PERFORMANCE_TABLES = {
    "decode": "Decode: ms per token by path and cache length, against the bandwidth floor",
    "batch_sweep": "Engine throughput by batch size",
    "time_to_first_token": "Time to first token",
    "decode_attention": "Decode attention kernel: µs from Python and in a CUDA graph, beside SDPA",
    "prefill_attention": "Prefill attention kernel: TFLOP/s beside SDPA's flash and cuDNN backends",
    "gemv": "GEMV: µs and fraction of copy bandwidth, beside cuBLAS",
    "projection_chain": "One decode step's projections, against their floor",
    "hf_compile": "Hugging Face's compiled static-cache generate",
    "kv_cache_bytes": "KV-cache bytes: grouped-query against the multi-head equivalent",
}
ENVIRONMENT_FIELDS = ("device", "driver", "cuda", "torch", "triton", "transformers", "date", "commit")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222;
       line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
td, th { padding: 4px 10px; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
table.rows td { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; background: #f7f7f9;
        border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px; width: max-content; font-size: 14px; }
.card dt { color: #666; } .card dd { margin: 0; font-family: ui-monospace, monospace; }
.verdict { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px; color: #fff;
           vertical-align: middle; }
.pass { background: #2e7d32; } .fail { background: #c62828; } .none { background: #777; }
.links { font-size: 14px; color: #555; }
figure { margin: 0.5em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #666; }
table.texts { table-layout: fixed; width: 100%; }
table.texts td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12.5px; }
table.texts .prompt { color: #888; }
mark { background: #ffe08a; }
.missed li { margin-bottom: 0.3em; }
"""


def page(title, body):
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _cell(value):
    """One table cell: numbers right-aligned and rounded to what a reader compares."""
    if isinstance(value, bool) or value is None:
        return f"<td>{'—' if value is None else ('yes' if value else 'no')}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:,.4g}</td>' if abs(value) < 1e6 else f'<td class="num">{value:,.0f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def table(rows):
    """A table from a list of dict rows; its columns are the keys in the order they first appear."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in rows)
    return f'<table class="rows"><tr>{head}</tr>{body}</table>'


def environment_card(environment):
    items = "".join(f"<dt>{field}</dt><dd>{html.escape(str(environment.get(field) or '—'))}</dd>"
                    for field in ENVIRONMENT_FIELDS)
    return f'<dl class="card">{items}</dl>'


def verdict(summary):
    if summary is None:
        return '<span class="verdict none">no summary</span>'
    return '<span class="verdict pass">passed</span>' if summary["passed"] else \
        '<span class="verdict fail">missed targets</span>'


def embedded_figure(path):
    """A figure as a data: URI, so the index is one file that opens anywhere."""
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def notebook_section(stem, results, figures, page_name):
    """A notebook's summary as it recorded it, its figures, and links to its page and its data."""
    summary = results.get("summary")
    headline = "".join(f"<li>{html.escape(line)}</li>" for line in (summary or {}).get("headline", []))
    links = [f'<a href="{page_name}">notebook</a>'] if page_name else []
    links.append(f'<a href="results/{stem}.json">results/{stem}.json</a>')
    return (f"<h3>{html.escape(stem)} {verdict(summary)}</h3><ul>{headline}</ul>"
            f'<p class="links">{" · ".join(links)}</p>' + "".join(embedded_figure(f) for f in figures))


def _split_at_divergence(text, reference):
    """(common prefix, rest) of text against reference: tokens are not stored, so the highlight starts at
    the first character where the two decoded texts differ."""
    common = os.path.commonprefix([text, reference])
    return common, text[len(common):]


def _text_cell(prompt, text, reference):
    common, rest = _split_at_divergence(text, reference)
    marked = f"<mark>{html.escape(rest)}</mark>" if rest else ""
    return f'<td class="text"><span class="prompt">{html.escape(prompt)}</span>{html.escape(common)}{marked}</td>'


def _run_label(run):
    fields = [run["model"], run.get("path"), run.get("dtype"), run["mode"]]
    label = html.escape(", ".join(f for f in fields if f))
    if run["identical"]:
        return f"{label}<br>identical over {run['new_tokens']} tokens"
    badge = '<span class="verdict pass">within noise</span>' if run["passed"] else \
        '<span class="verdict fail">beyond noise</span>'
    return (f"{label}<br>first divergence at new token {run['first_divergence']}: reference margin "
            f"{run['margin']:.3g}, measured noise {run['noise']:.3g}<br>{badge}")


def generated_texts(runs):
    """Reference and FlashCore text side by side, from the first differing character highlighted."""
    rows = "".join(f"<tr><td>{_run_label(r)}</td>{_text_cell(r['prompt'], r['reference_text'], r['text'])}"
                   f"{_text_cell(r['prompt'], r['text'], r['reference_text'])}</tr>" for r in runs)
    return ('<table class="texts"><colgroup><col style="width:18%"><col><col></colgroup>'
            f"<tr><th>run</th><th>reference (SDPA)</th><th>FlashCore</th></tr>{rows}</table>")


def at_a_glance(results):
    """One line per notebook: its verdict badge and the first line of its summary (its one-line verdict)."""
    items = []
    for stem, data in results.items():
        summary = data.get("summary")
        first = (summary or {}).get("headline", ["no summary in its results file"])[:1]
        items.append(f"<li><b>{html.escape(stem)}</b> {verdict(summary)} {html.escape(''.join(first))}</li>")
    return f'<ul class="glance">{"".join(items)}</ul>'


def missed_list(missed_by_stem):
    items = "".join(f"<li><b>{html.escape(stem)}</b>: {html.escape(line)}</li>"
                    for stem, lines in missed_by_stem.items() for line in lines)
    if not items:
        return "<p>Nothing: every target the results files check was met.</p>"
    return f'<ul class="missed">{items}</ul>'
