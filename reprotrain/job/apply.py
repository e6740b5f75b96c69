"""Applying determinism knobs to random, numpy and torch, and reading back what took effect."""

from __future__ import annotations

import os
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprotrain.policy import Knobs

_NONDET = re.compile(r"^(?P<op>.+?) does not have a deterministic implementation")


def apply_env(knobs: Knobs) -> None:
    """Set the variables read at library start (cuBLAS, OpenMP); must precede any CUDA use."""
    os.environ.update(knobs.env())


def seed_python(seed: int) -> None:
    random.seed(seed)


def seed_numpy(seed: int) -> None:
    import numpy as np

    np.random.seed(seed % 2**32)  # numpy's legacy seed takes 32 bits


def apply_torch(knobs: Knobs, seed: int | None) -> None:
    """Apply every torch knob; the thread count first, before any op can start a pool."""
    import torch

    if knobs.num_threads is not None:
        torch.set_num_threads(knobs.num_threads)
    if knobs.seed_rngs and seed is not None:
        torch.manual_seed(seed)  # seeds every device, CUDA lazily
    if knobs.cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = knobs.cudnn_benchmark
    if knobs.cudnn_deterministic is not None:
        torch.backends.cudnn.deterministic = knobs.cudnn_deterministic
    if knobs.deterministic_algorithms is not None:
        torch.use_deterministic_algorithms(True, warn_only=knobs.deterministic_algorithms == "warn")
    if knobs.fill_uninitialized_memory is not None:
        torch.utils.deterministic.fill_uninitialized_memory = knobs.fill_uninitialized_memory
    if knobs.allow_tf32 is not None:
        if hasattr(torch.backends.cudnn, "fp32_precision"):  # torch ≥ 2.9
            precision = "tf32" if knobs.allow_tf32 else "ieee"
            torch.backends.cuda.matmul.fp32_precision = precision
            torch.backends.cudnn.fp32_precision = precision
        else:  # an older torch a GPU host brings (its own CUDA build): the flags before them
            torch.backends.cuda.matmul.allow_tf32 = knobs.allow_tf32
            torch.backends.cudnn.allow_tf32 = knobs.allow_tf32
    if knobs.mkldnn_deterministic is not None:
        torch.backends.mkldnn.deterministic = knobs.mkldnn_deterministic
    if knobs.sdpa_math_only is not None:
        fused = not knobs.sdpa_math_only
        torch.backends.cuda.enable_flash_sdp(fused)
        torch.backends.cuda.enable_mem_efficient_sdp(fused)
        if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):  # an older torch has no cuDNN backend
            torch.backends.cuda.enable_cudnn_sdp(fused)
        torch.backends.cuda.enable_math_sdp(True)


def apply_all(knobs: Knobs, seed: int | None) -> None:
    """Everything for a process that has torch loaded: env, Python and numpy RNGs, torch."""
    apply_env(knobs)
    if knobs.seed_rngs and seed is not None:
        seed_python(seed)
        seed_numpy(seed)
    else:
        reseed_from_entropy()
    apply_torch(knobs, seed)


def reseed_from_entropy() -> None:
    """What a fresh interpreter does: a forked child would otherwise share its parent's streams."""
    import numpy as np
    import torch

    random.seed()
    np.random.seed()
    torch.seed()


def effective() -> dict[str, Any]:
    """Each knob as torch reports it now, whatever asked for it."""
    import torch

    mode = "off"
    if torch.are_deterministic_algorithms_enabled():
        mode = "warn" if torch.is_deterministic_algorithms_warn_only_enabled() else "error"
    cuda = torch.backends.cuda
    return {
        "deterministic_algorithms": mode,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "num_threads": torch.get_num_threads(),
        "allow_tf32": {
            "matmul": _tf32(cuda.matmul),
            "cudnn": _tf32(torch.backends.cudnn),
        },
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "fill_uninitialized_memory": torch.utils.deterministic.fill_uninitialized_memory,
        "mkldnn_deterministic": torch.backends.mkldnn.deterministic,
        "sdpa_math_only": not (
            cuda.flash_sdp_enabled()
            or cuda.mem_efficient_sdp_enabled()
            or getattr(cuda, "cudnn_sdp_enabled", bool)()
        ),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "python_hash_seed": os.environ.get("PYTHONHASHSEED"),
        "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "mkl_cbwr_branch": mkl_cbwr_branch(),
        "torch_initial_seed": torch.initial_seed(),
    }


def _tf32(backend: object) -> bool:
    """Whether a backend computes float32 in TF32: its fp32_precision (torch ≥ 2.9), else, or
    where that says "none", its allow_tf32 flag."""
    precision = getattr(backend, "fp32_precision", "none")
    return precision == "tf32" or (precision == "none" and bool(getattr(backend, "allow_tf32", False)))


# mkl_cbwr.h: the code path MKL's conditional numerical reproducibility pins (MKL_CBWR_BRANCH)
_CBWR_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1"}
_CBWR_BRANCHES |= {8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512"}
_CBWR_BRANCHES |= {13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_CBWR_STRICT = 0x10000


def mkl_cbwr_branch() -> str | None:
    """What MKL itself runs with (not only what MKL_CBWR asked), or None where torch has no MKL.

    MKL reads MKL_CBWR once, at its first use in the process; the fork server never calls it,
    so a job's setting takes effect, and asking here fixes it before any user code runs.
    """
    import ctypes

    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    value = int(get(1))  # MKL_CBWR_BRANCH
    name = _CBWR_BRANCHES.get(value & ~_CBWR_STRICT, str(value & ~_CBWR_STRICT))
    return name + (",STRICT" if value & _CBWR_STRICT else "")


def nondeterministic_op(message: str) -> str | None:
    """The op named by torch's 'X does not have a deterministic implementation' alert."""
    m = _NONDET.match(message.strip())
    return m.group("op") if m else None


def record_nondeterministic_warnings(on_op: Callable[[str, str], None]) -> None:
    """Under `warn`, report every op torch flags, each time, and still show the warning."""
    warnings.filterwarnings("always", message=r".*does not have a deterministic implementation")
    previous = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        op = nondeterministic_op(str(message))
        if op is not None:
            on_op(op, str(message))
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
