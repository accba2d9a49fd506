"""Package-level behaviour: the interpreter switch on machines without CUDA."""
import os
import subprocess
import sys

import pytest

from conftest import ON_GPU

pytestmark = pytest.mark.skipif(ON_GPU, reason="the interpreter switch only happens without CUDA")


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_import_sets_interpreter_with_a_notice():
    result = _run("import os, flashcore; print(os.environ['TRITON_INTERPRET'], flashcore.INTERPRETED)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True"]
    assert "Triton interpreter" in result.stderr


def test_triton_imported_first_is_a_clear_error():
    result = _run("import triton.language\nimport flashcore")
    assert result.returncode != 0
    assert "ImportError: triton was imported before flashcore" in result.stderr


def test_integration_imports_flashcore_before_transformers():
    result = _run("import integration.llama_flashcore, os; print(os.environ['TRITON_INTERPRET'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
