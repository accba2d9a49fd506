"""Where notebooks write what they measured, and the environment header every results file carries.

A GPU run writes the published files under report/; a run without CUDA writes the same files under
build/report/ (ignored by git), so a CPU run never overwrites the published GPU results.
"""
import datetime
import json
import os
import subprocess
from pathlib import Path

import torch
import triton

REPO_ROOT = Path(__file__).resolve().parent.parent


def report_dir():
    """report/ on a GPU machine, build/report/ elsewhere; FLASHCORE_REPORT_DIR overrides both."""
    if os.environ.get("FLASHCORE_REPORT_DIR"):
        return Path(os.environ["FLASHCORE_REPORT_DIR"])
    return REPO_ROOT / ("report" if torch.cuda.is_available() else "build/report")


def _git_commit():
    """FLASHCORE_COMMIT where set (a copy of the tree whose git metadata may be stale, as on the lent GPU machine),
    else the checkout's HEAD."""
    if os.environ.get("FLASHCORE_COMMIT"):
        return os.environ["FLASHCORE_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _driver_version():
    """The NVIDIA driver's version, or None without nvidia-smi (torch reports the CUDA runtime, not the driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def environment(params):
    """The common header: device, driver, versions, date, commit and the notebook's parameters."""
    import transformers

    on_gpu = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if on_gpu else "cpu (triton interpreter)",
        "driver": _driver_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if on_gpu else None,
        "date": datetime.date.today().isoformat(),
        "commit": _git_commit(),
        "params": params,
    }


def write_results(stem, payload, params):
    """Write report_dir()/results/<stem>.json = {"environment": ..., **payload}; return its path."""
    path = report_dir() / "results" / f"{stem}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(params), **payload}, indent=1, default=float) + "\n")
    print(f"results written to {_shown_path(path)}")
    return path


def _shown_path(path):
    """path relative to the repository root when it lies inside it: printed paths end up in the published
    pages, where the machine's own directory layout means nothing to a reader."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def figure_path(name):
    path = report_dir() / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
