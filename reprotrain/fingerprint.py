"""The environment fingerprint: its digest, and a diff that labels each difference's likely role.

`env_digest` covers what can change a job's bits; it leaves out what names a machine without
changing results (hostname, pid, GPU UUIDs, the CPU count).
"""

from __future__ import annotations

from typing import Any

from reprotrain.hashing import digest_json

# Prefix of a flattened key → (label, likely to change result bits). First match wins.
_LABELS: tuple[tuple[str, str, bool], ...] = (
    ("host.", "host identity", False),
    ("cuda.gpus.", "GPU model", True),
    ("cuda.cudnn", "cuDNN version", True),
    ("cuda.runtime", "CUDA version", True),
    ("cuda.nccl", "NCCL version", True),
    ("cuda.driver", "GPU driver version", True),
    ("cuda.", "CUDA use", True),
    ("device", "device type", True),
    ("torch.", "torch version", True),
    ("determinism.num_threads", "thread count", True),
    ("determinism.torch_initial_seed", "torch seed", True),
    ("determinism.", "determinism setting", True),
    ("cpu.model", "CPU model", True),
    ("cpu.flags", "CPU instruction set", True),
    ("cpu.count", "CPU count", False),
    ("blas.", "BLAS library", True),
    ("numpy.", "numpy version", True),
    ("python.", "Python version", True),
    ("packages.digest", "installed packages", False),
    ("packages.list.", "installed package", True),
    ("inputs.", "input data", True),
    ("bundle", "code bundle", True),
    ("image.build_date", "image build date", False),
    ("image", "container image", True),
    ("env.", "environment variable", True),
    ("os.", "operating system", False),
)
# names a machine or a moment without changing bits: the build date of an image built twice from
# the same locks and base is not a cause (its locks, base digest and OS packages are)
_IGNORED_PREFIXES = ("host.", "cpu.count", "image.build_date")
_IGNORED_SUFFIXES = (".uuid",)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists of dicts are indexed (gpus.0.name)."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def _relevant(key: str) -> bool:
    return not key.startswith(_IGNORED_PREFIXES) and not key.endswith(_IGNORED_SUFFIXES)


def env_digest(fingerprint: dict[str, Any]) -> str:
    """Digest of the reproducibility-relevant part of a fingerprint."""
    flat = flatten(fingerprint)
    return digest_json({k: v for k, v in flat.items() if _relevant(k)})


def label(key: str) -> tuple[str, bool]:
    for prefix, name, likely in _LABELS:
        if key == prefix.rstrip(".") or key.startswith(prefix):
            return name, likely and _relevant(key)
    return "other", False


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Every differing key, likely causes first, each with its label."""
    fa, fb = flatten(a), flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if va != vb:
            name, likely = label(key)
            rows.append({"key": key, "a": va, "b": vb, "label": name, "likely_cause": likely})
    rows.sort(key=lambda r: not r["likely_cause"])
    return rows
