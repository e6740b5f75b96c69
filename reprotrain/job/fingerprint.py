"""Collecting the environment fingerprint of a job process (the model and diff live in core).

The static part (interpreter, OS, CPU, packages, BLAS) is read once, before the fork server
forks, so each job pays only for the part that depends on the job and its device.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

from reprotrain.hashing import digest_json
from reprotrain.wire import BUILD_FACTS_ENV, BUILD_FACTS_PATH

BUILD_FACTS = Path(os.environ.get(BUILD_FACTS_ENV, BUILD_FACTS_PATH))
ENV_ALLOWLIST = (
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MKL_CBWR",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING",
    "NVIDIA_TF32_OVERRIDE",
    "TORCH_CUDNN_V8_API_DISABLED",
    "PYTORCH_CUDA_ALLOC_CONF",
    "SOURCE_DATE_EPOCH",
    "LD_PRELOAD",
)


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {"model": model, "flags": flags, "count": os.cpu_count()}


def _packages() -> dict[str, str]:
    dists = {}
    for d in importlib.metadata.distributions():
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            dists[name] = d.version
    return dict(sorted(dists.items()))


def _blas() -> dict[str, Any]:
    import numpy as np
    import torch

    out: dict[str, Any] = {"numpy": None, "torch": None}
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy"] = f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001 - numpy's config shape varies by build; absent is fine
        pass
    for line in torch.__config__.show().splitlines():
        line = line.strip(" -")
        if "Math Kernel Library" in line or line.startswith("BLAS_INFO") or "OpenBLAS" in line:
            out["torch"] = line
            break
    return out


def _build_facts() -> dict[str, Any] | None:
    try:
        return json.loads(BUILD_FACTS.read_text())
    except (OSError, ValueError):
        return None


@functools.cache
def static_facts() -> dict[str, Any]:
    """Facts that do not change while a worker runs; safe to read before forking (no CUDA)."""
    import numpy as np
    import torch

    packages = _packages()
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "libc": " ".join(platform.libc_ver()),
        },
        "cpu": _cpu(),
        "torch": {
            "version": torch.__version__,
            "git": torch.version.git_version,
            "cuda_build": torch.version.cuda,
            "debug": torch.version.debug,
        },
        "numpy": {"version": np.__version__},
        "blas": _blas(),
        "packages": {"digest": digest_json(packages), "list": packages},
        "image": _build_facts(),
    }


def _cuda(device_type: str) -> dict[str, Any]:
    import torch

    if device_type != "cuda":
        return {"used": False}
    out: dict[str, Any] = {
        "used": True,
        "runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": None,
        "driver": _driver_version(),
        "gpus": [],
    }
    try:
        out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001 - builds without NCCL
        pass
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out["gpus"].append(
            {
                "name": p.name,
                "capability": f"{p.major}.{p.minor}",
                "memory": p.total_memory,
                "uuid": str(getattr(p, "uuid", "")),
            }
        )
    return out


def _driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word[:1].isdigit() and "." in word:
            return word
    return None


def collect(
    *, device_type: str, determinism: dict[str, Any], inputs: dict[str, Any], bundle: str | None
) -> dict[str, Any]:
    """The whole fingerprint of one job process, after its policy was applied."""
    return {
        **static_facts(),
        "cuda": _cuda(device_type),
        "device": device_type,
        "determinism": determinism,
        "env": {k: os.environ.get(k) for k in ENV_ALLOWLIST},
        "inputs": inputs,
        "bundle": bundle,
        "host": {"hostname": socket.gethostname(), "pid": os.getpid()},
    }
