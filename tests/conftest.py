import pytest
import torch

import flashcore  # noqa: F401  (sets TRITON_INTERPRET=1 before triton loads when there is no CUDA)

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not ON_GPU:
            item.add_marker(skip)


@pytest.fixture
def device():
    return DEVICE
