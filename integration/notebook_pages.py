"""Executed notebooks as self-contained HTML pages: nothing fetched from the network, set-up folded away, no
stderr, no machine paths. Figures need no work: nbconvert already embeds image outputs as data: URIs."""
import nbformat
from nbconvert import HTMLExporter

from integration.machine_paths import scrub_paths

_TEXT_OUTPUTS = ("text/plain", "text/html", "text/markdown")

# JupyterLab's template without the scripts it loads from a CDN (require.js, MathJax, mermaid: our notebooks
# use none of them, and a page must open offline), and with the code of cells tagged "hide-input" (imports,
# device set-up, plotting) folded behind a click, so the code that does the work is what a reader sees.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style>
details.hidden-input > summary { cursor: pointer; color: #666; font: 12px var(--jp-ui-font-family);
                                 padding: 2px 0 2px 70px; }
.jp-RenderedHTMLCommon td { white-space: normal; max-width: 60em; }
</style>
{%- endblock extra_css -%}
{% block input_group -%}
{%- if 'hide-input' in cell.metadata.get('tags', []) -%}
<details class="hidden-input"><summary>show code</summary>{{ super() }}</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{%- endblock input_group %}
"""


def _for_readers(notebook, roots):
    """Drop stderr streams (progress bars, library warnings and the interpreter notice are noise in a report;
    a failing cell still shows its traceback, an error output) and scrub machine paths from text outputs
    (images are left alone: base64 may spell anything)."""
    for cell in notebook.cells:
        if "outputs" not in cell:
            continue
        cell.outputs = [out for out in cell.outputs if not (out.output_type == "stream" and out.name == "stderr")]
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = scrub_paths(out.text, roots)
            elif out.output_type == "error":
                out.traceback = [scrub_paths(line, roots) for line in out.traceback]
            else:
                for mime in _TEXT_OUTPUTS:
                    if mime in out.get("data", {}):
                        out.data[mime] = scrub_paths(out.data[mime], roots)
    return notebook


def render_notebook(path, roots):
    """The HTML page of one executed notebook; roots: the directories machine paths are shown relative to."""
    exporter = HTMLExporter(template_name="lab")
    exporter.raw_template = _TEMPLATE
    body, _ = exporter.from_notebook_node(_for_readers(nbformat.read(path, as_version=4), roots))
    return body
