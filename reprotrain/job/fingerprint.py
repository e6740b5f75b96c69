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
import sys
from pathlib import Path

from reprotrain.fingerprint import (
    BlasFacts,
    CpuFacts,
    CudaFacts,
    CudaUnused,
    EnvKnobs,
    Fingerprint,
    GpuFacts,
    HostFacts,
    ImageFacts,
    NumpyFacts,
    OsFacts,
    Packages,
    PythonFacts,
    StaticFacts,
    TorchFacts,
)
from reprotrain.hashing import digest_json
from reprotrain.wire import BUILD_FACTS_ENV, BUILD_FACTS_PATH

BUILD_FACTS = Path(os.environ.get(BUILD_FACTS_ENV, BUILD_FACTS_PATH))
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # there on a host with NVIDIA's kernel driver
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


def _cpu() -> CpuFacts:
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
    return CpuFacts(model=model, flags=flags, count=os.cpu_count(), capability=_capability())


def _capability() -> str | None:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - a torch without it
        return None


def _packages() -> dict[str, str]:
    dists = {}
    for d in importlib.metadata.distributions():
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            dists[name] = d.version
    return dict(sorted(dists.items()))


def _blas() -> BlasFacts:
    import numpy as np

    numpy_blas = None
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        numpy_blas = f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001 - numpy's config shape varies by build; absent is fine
        pass
    return BlasFacts(numpy=numpy_blas, torch=_torch_blas())


def _torch_blas() -> str | None:
    """The BLAS torch runs on, asked of the library itself.

    Not `torch.__config__.show()`: on a CUDA build it counts GPUs first, which initializes the
    CUDA driver, and every process forked after that fails its first CUDA call (seen on an H200).
    """
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:  # a torch laid out differently: the BLAS goes unrecorded, the job still runs
        return None
    buf = ctypes.create_string_buffer(512)
    try:
        lib.MKL_Get_Version_String(buf, len(buf))  # MKL, linked into torch on x86-64
        return buf.value.decode(errors="replace").strip() or None
    except AttributeError:
        pass
    try:
        config = lib.openblas_get_config  # torch built on OpenBLAS (aarch64)
    except AttributeError:
        return None
    config.restype = ctypes.c_char_p
    return "OpenBLAS " + config().decode(errors="replace").strip()


def _build_facts() -> ImageFacts | None:
    try:
        return ImageFacts.model_validate_json(BUILD_FACTS.read_text())
    except OSError:
        return None  # not an image built by deploy/build_facts.py
    except ValueError as e:  # a broken facts file must not stop every job: say so, record none
        print(f"reprotrain: ignoring unreadable build facts {BUILD_FACTS}: {e}", file=sys.stderr)
        return None


@functools.cache
def static_facts() -> StaticFacts:
    """Facts that do not change while a worker runs; safe to read before forking (no CUDA)."""
    import numpy as np
    import torch

    packages = _packages()
    return StaticFacts(
        python=PythonFacts(
            version=platform.python_version(), implementation=platform.python_implementation()
        ),
        os=OsFacts(
            system=platform.system(),
            release=platform.release(),
            machine=platform.machine(),
            libc=" ".join(platform.libc_ver()),
        ),
        cpu=_cpu(),
        torch=TorchFacts(
            version=torch.__version__,
            git=torch.version.git_version,
            cuda_build=torch.version.cuda,
            debug=torch.version.debug,
        ),
        numpy=NumpyFacts(version=np.__version__),
        blas=_blas(),
        packages=Packages(digest=digest_json(packages), list=packages),
        image=_build_facts(),
    )


def _cuda(device_type: str) -> CudaUnused | CudaFacts:
    import torch

    if device_type != "cuda":
        return CudaUnused()
    nccl = None
    try:
        nccl = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001 - builds without NCCL
        pass
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append(
            GpuFacts(
                name=p.name,
                capability=f"{p.major}.{p.minor}",
                memory=p.total_memory,
                uuid=str(getattr(p, "uuid", "")),
            )
        )
    return CudaFacts(
        runtime=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        nccl=nccl,
        driver=_driver_version(),
        gpus=gpus,
    )


def _driver_version() -> str | None:
    try:
        text = NVIDIA_DRIVER.read_text()
    except OSError:
        return None
    for word in text.split():
        if word[:1].isdigit() and "." in word:
            return word
    return None


def collect(*, device_type: str, determinism: EnvKnobs) -> Fingerprint:
    """The whole fingerprint of one job process, after its policy was applied."""
    return Fingerprint(
        **dict(static_facts()),
        cuda=_cuda(device_type),
        device=device_type,
        determinism=determinism,
        env={k: os.environ.get(k) for k in ENV_ALLOWLIST},
        host=HostFacts(hostname=socket.gethostname(), pid=os.getpid()),
    )


def cuda_facts() -> dict | None:
    """This host's CUDA facts as a job using CUDA reads them (None without a usable GPU)."""
    import torch

    return _cuda("cuda").model_dump(mode="json") if torch.cuda.is_available() else None


if __name__ == "__main__":  # the worker's probe (launcher.probe_cuda): it never imports torch itself
    print(json.dumps(cuda_facts()))
