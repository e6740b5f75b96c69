"""Two checkpoint files compared tensor by tensor: `torch.save` files and `.safetensors`.

Opened safely (`torch.load(weights_only=True)`, never arbitrary unpickling; safetensors by its
header) in a child process bounded in memory and time, because the files are the job's and may be
anything. `compare_checkpoints(a, b)` runs that child and returns what it found, or why not:

    {"tensors": N, "first_tensor": {"key", "max_abs", "max_rel"} | None,
     "fields": [{"key", "a", "b", "path": bool}, …],  # non-tensor values that differ
     "structure": [{"key", "a", "b"}, …]}              # keys or types present on one side only
    {"error": "…"}                                      # not opened (too big, not a checkpoint, …)
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from reprotrain.hashing import encode_float
from reprotrain.procs import python_argv

TIME_S = 30.0  # plus one second per 100 MB of the two files
MEMORY_BYTES = 2 << 30  # plus four times the two files' size
MAX_FIELDS = 20


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    """Compare two checkpoint files in a bounded child process."""
    out = run_bounded("reprotrain.job.checkpoints", [a, b])
    if "error" in out:
        why = out["error"]
        return {"error": why if why.startswith("took") else f"not opened as checkpoints: {why}"}
    return dict(out["value"])


def run_bounded(module: str, files: list[Path]) -> dict[str, Any]:
    """`python -m module file…` in a child bounded in memory and time by the files' size; what it
    printed as JSON as {"value": …}, or {"error": why} (for a timeout: "took longer than …")."""
    size = sum(f.stat().st_size for f in files)
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = min(MEMORY_BYTES + 4 * size, ram * 3 // 4)  # never more than most of this host

    def bound() -> None:  # in the child, before it loads anything
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    try:
        proc = subprocess.run(
            python_argv(sys.executable, module, *map(str, files)),
            capture_output=True,
            timeout=TIME_S + size / 100e6,
            preexec_fn=bound,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"took longer than {TIME_S + size / 100e6:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        return {"error": last[:300]}
    return {"value": json.loads(proc.stdout)}


def load(path: Path) -> Any:
    """A checkpoint's contents, tensors on the CPU; nothing but tensors and plain containers."""
    import torch

    with open(path, "rb") as f:
        head = f.read(9)
    zipped = head[:4] == b"PK\x03\x04"  # torch's own format maps its storages; the legacy one cannot
    if not zipped and head[8:9] == b"{":  # safetensors: a header length, then its JSON (stored
        from reprotrain.diffs import read_tensor, safetensors_names  # artifacts have no suffix)

        return {
            name: torch.from_numpy(read_tensor(path, name, widen=False)) for name in safetensors_names(path)
        }
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)


def diff(a: Any, b: Any) -> dict[str, Any]:
    """Walk both trees in step; tensors compared bit for bit, other values by equality."""
    found: dict[str, Any] = {"tensors": 0, "first_tensor": None, "fields": [], "structure": []}
    _walk(a, b, "", found)
    return found


def _note(found: dict[str, Any], kind: str, item: dict[str, Any]) -> None:
    """Keep the first MAX_FIELDS of each kind; the first non-path field always (it decides)."""
    if kind == "fields" and not item["path"] and "real_field" not in found:
        found["real_field"] = item
    if len(found[kind]) < MAX_FIELDS:
        found[kind].append(item)


def _walk(a: Any, b: Any, key: str, found: dict[str, Any]) -> None:
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        found["tensors"] += 1
        if found["first_tensor"] is None and not _same_bits(a, b):
            found["first_tensor"] = {"key": key or "/", **tensor_delta(a, b)}
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{key}/{k}" if key else str(k)
            if k not in a or k not in b:
                _note(found, "structure", {"key": sub, "a": k in a, "b": k in b})
            else:
                _walk(a[k], b[k], sub, found)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{key}/{i}" if key else str(i), found)
    elif type(a) is not type(b) or isinstance(a, list | tuple):
        _note(found, "structure", {"key": key or "/", "a": type(a).__name__, "b": type(b).__name__})
    elif a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
        path = isinstance(a, str) and isinstance(b, str) and os.path.isabs(a) and os.path.isabs(b)
        _note(found, "fields", {"key": key or "/", "a": _show(a), "b": _show(b), "path": path})


def _same_bits(a: Any, b: Any) -> bool:
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(
        torch.equal(
            a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
        )
    )


def tensor_delta(a: Any, b: Any) -> dict[str, Any]:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return {"a": f"{a.dtype} {tuple(a.shape)}", "b": f"{b.dtype} {tuple(b.shape)}"}
    if not (a.is_floating_point() or a.is_complex() or a.dtype.is_signed or a.dtype.itemsize > 1):
        return {}
    x, y = (a.to(torch.complex128), b.to(torch.complex128)) if a.is_complex() else (a.double(), b.double())
    d = (x - y).abs()
    scale = x.abs().maximum(y.abs())
    rel = (d / scale.clamp_min(1e-300)).masked_fill(scale == 0, 0.0)
    return {"max_abs": encode_float(float(d.max())), "max_rel": encode_float(float(rel.max()))}


def _show(v: Any) -> Any:
    return v if isinstance(v, int | float | bool | None) else str(v)[:200]


def main(argv: list[str]) -> int:
    a, b = Path(argv[0]), Path(argv[1])
    print(json.dumps(diff(load(a), load(b)), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
