"""GPU tests skip unless torch sees a CUDA device (checked in a subprocess: never init CUDA here)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _cuda_available() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], check=False, timeout=120).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [i for i in items if "tests/gpu/" in str(i.fspath)]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="no CUDA device visible to torch")
        for item in gpu_items:
            item.add_marker(skip)
