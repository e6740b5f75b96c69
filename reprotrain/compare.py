"""Comparing two results: did a re-run reproduce its original, and if not, where and why not.

Builds a `Verdict` (reprotrain/verdict.py) from two `Result`s and, where given, their final
state files (for the size of the first differing tensor's difference).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from reprotrain import fingerprint
from reprotrain.hashing import decode_float, digest_bytes
from reprotrain.result import Result, TraceEntry
from reprotrain.status import Status
from reprotrain.verdict import Verdict

_SPEC_CAUSES = {
    "seed": "seed",
    "params": "job parameters",
    "determinism": "determinism policy",
    "entrypoint": "code entrypoint",
    "command": "command",
    "bundle": "code bundle",
    "device": "device",
    "inputs": "input paths",
}


def same_value(a: Any, b: Any) -> bool:
    """Equal bit for bit: -0.0 differs from 0.0, NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def _num(v: Any) -> float | None:
    v = decode_float(v)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def metric_deltas(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each metric that differs, with abs and rel difference where both are numbers."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(a) | set(b)):
        va, vb = a.get(name), b.get(name)
        if same_value(va, vb):
            continue
        row: dict[str, Any] = {"a": va, "b": vb}
        fa, fb = _num(va), _num(vb)
        if fa is not None and fb is not None and math.isfinite(fa) and math.isfinite(fb):
            row["abs"] = abs(fa - fb)
            scale = max(abs(fa), abs(fb))
            row["rel"] = row["abs"] / scale if scale else 0.0
        out[name] = row
    return out


def _entry_differs(x: TraceEntry, y: TraceEntry) -> list[str]:
    what = []
    if x.step != y.step:
        what.append("step")
    if x.data != y.data:
        what.append("data_order")
    if x.params != y.params:
        what.append("parameters")
    if metric_deltas(x.metrics, y.metrics):
        what.append("metrics")
    return what


def first_trace_divergence(a: Result, b: Result) -> dict[str, Any] | None:
    """The first logged step at which the traces differ, and what differs there."""
    for i, (x, y) in enumerate(zip(a.trace, b.trace, strict=False)):
        what = _entry_differs(x, y)
        if what:
            return {
                "index": i,
                "step": x.step,
                "differs": what,
                "metrics": metric_deltas(x.metrics, y.metrics),
                "data_order_first": "data_order" in what,
            }
    if len(a.trace) != len(b.trace):
        i = min(len(a.trace), len(b.trace))
        step = (a.trace if len(a.trace) > i else b.trace)[i].step
        return {
            "index": i,
            "step": step,
            "differs": ["length"],
            "metrics": {},
            "data_order_first": False,
            "note": f"one trace ends after {i} entries ({len(a.trace)} vs {len(b.trace)})",
        }
    return None


def first_tensor(a: Result, b: Result, from_step: int | None) -> dict[str, Any] | None:
    """The first tensor, in the model's own order, whose digest differs at or after a step."""
    pa = {p.step: p for p in a.param_digests}
    for p in b.param_digests:
        if from_step is not None and p.step < from_step:
            continue
        mine = pa.get(p.step)
        if mine is None or mine.overall == p.overall:
            continue
        for name, dig in mine.tensors.items():
            if p.tensors.get(name) != dig:
                return {"step": p.step, "tensor": name}
    ta = (a.digests.get("model") or {}).get("tensors") or {}
    tb = (b.digests.get("model") or {}).get("tensors") or {}
    for name, dig in ta.items():
        if tb.get(name) != dig:
            return {"step": None, "tensor": name, "where": "final model state"}
    return None


def file_status(a: Result, b: Result) -> dict[str, str]:
    fa = (a.digests.get("files") or {}).get("files") or {}
    fb = (b.digests.get("files") or {}).get("files") or {}
    out = {}
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fb:
            out[rel] = "only_a"
        elif rel not in fa:
            out[rel] = "only_b"
        else:
            out[rel] = "same" if fa[rel]["digest"] == fb[rel]["digest"] else "differs"
    return out


def _digest_equal(a: Result, b: Result, key: str) -> bool:
    da, db = a.digests.get(key), b.digests.get(key)
    if isinstance(da, dict) and isinstance(db, dict):
        return da.get("overall") == db.get("overall")
    return da == db


EMPTY = digest_bytes(b"")
COMPONENTS = ("trace", "metrics", "model", "optimizer", "files", "stdout")


def _present(r: Result, key: str) -> bool:
    """Whether a run has this component at all: what was not tracked or produced is absent."""
    if key == "trace":
        return bool(r.trace)
    if key == "metrics":
        return bool(r.metrics)
    if key == "files":
        return bool((r.digests.get("files") or {}).get("files"))
    if key == "stdout":
        return r.digests.get("stdout") not in (None, EMPTY)
    return r.digests.get(key) is not None


def components(a: Result, b: Result, trace_equal: bool) -> tuple[dict[str, bool], list[str]]:
    """Equality of each component either run has, and the components neither has."""
    equal: dict[str, bool] = {}
    for key in COMPONENTS:
        if not (_present(a, key) or _present(b, key)):
            continue
        if key == "trace":
            equal[key] = trace_equal
        elif key == "metrics":
            equal[key] = not metric_deltas(a.metrics, b.metrics)
        else:
            equal[key] = _present(a, key) == _present(b, key) and _digest_equal(a, b, key)
    return equal, [k for k in COMPONENTS if k not in equal]


def inputs_diff(a: Result, b: Result) -> list[dict[str, Any]]:
    """The job's input data, by content (the spec's diff names changed paths)."""
    fa, fb = fingerprint.flatten(a.inputs, "inputs."), fingerprint.flatten(b.inputs, "inputs.")
    return [
        {"key": k, "a": fa.get(k), "b": fb.get(k), "label": "input data", "likely_cause": True}
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k) and not k.endswith(".path")
    ]


def policy_off(a: Result, b: Result) -> list[dict[str, Any]]:
    """Both runs unseeded: nothing was meant to reproduce; that alone explains a difference."""
    pa, pb = (((r.spec.get("determinism") or {}).get("policy")) for r in (a, b))
    if pa == pb == "off":
        return [
            {
                "key": "spec.determinism.policy",
                "a": "off",
                "b": "off",
                "label": "not seeded (policy off)",
                "likely_cause": True,
            }
        ]
    return []


def seed_notes(a: Result, b: Result) -> list[str]:
    """A run whose torch seed is not its spec's seeded torch itself (a script's own manual_seed)."""
    notes = []
    for side, r in (("a", a), ("b", b)):
        seed, policy = r.spec.get("seed"), (r.spec.get("determinism") or {}).get("policy")
        if r.determinism is None or seed is None or policy == "off":
            continue
        own = r.determinism.effective.torch_initial_seed
        if own != seed:
            notes.append(f"{side}: the job seeds torch itself (torch seed {own}; spec seed {seed})")
    return notes


def spec_diff(a: Result, b: Result) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(set(a.spec) | set(b.spec)):
        if key in _SPEC_CAUSES and a.spec.get(key) != b.spec.get(key):
            rows.append(
                {
                    "key": f"spec.{key}",
                    "a": a.spec.get(key),
                    "b": b.spec.get(key),
                    "label": _SPEC_CAUSES[key],
                    "likely_cause": True,
                }
            )
    return rows


def state_file(result: Result, job_dir: Path | None) -> Path | None:
    """Where a local run directory keeps the tracked model's final state, if it does."""
    rel = result.artifacts.get("state")
    return job_dir / rel if job_dir is not None and rel else None


def compare(a: Result, b: Result, a_state: Path | None = None, b_state: Path | None = None) -> Verdict:
    """The verdict of b (a re-run) against a (the original), with its explanation.

    a_state/b_state: the runs' final state files, for the max difference of the first
    differing tensor; without them the verdict still names the tensor.
    """
    causes = spec_diff(a, b) + inputs_diff(a, b) + fingerprint.diff(a.fingerprint, b.fingerprint)
    out = _verdict(a, b, {"a": a.job_id, "b": b.job_id}, a_state, b_state)
    if out["verdict"] in ("metrics_identical", "diverged"):
        causes = policy_off(a, b) + causes
    causes.sort(key=lambda c: not c["likely_cause"])
    out |= {"causes": causes, "likely_causes": [c["label"] for c in causes if c["likely_cause"]]}
    return Verdict.model_validate(out | {"notes": seed_notes(a, b) or None})


def _verdict(
    a: Result, b: Result, out: dict[str, Any], a_state: Path | None, b_state: Path | None
) -> dict[str, Any]:
    if a.status is not Status.SUCCEEDED or b.status is not Status.SUCCEEDED:
        failed = [_failed(side, r) for side, r in (("a", a), ("b", b)) if r.status is not Status.SUCCEEDED]
        return out | {"verdict": "incomparable", "reason": ", ".join(failed)}
    files = file_status(a, b)
    trace_div = first_trace_divergence(a, b)
    equal, absent = components(a, b, trace_div is None)
    out |= {
        "files": files,
        "equal": equal,
        "absent": absent,
        "nondeterministic_ops": sorted({o.op for r in (a, b) for o in r.nondeterministic_ops}),
    }
    if trace_div is None and all(equal.values()):
        return out | {"verdict": "identical", "reason": "every digest is equal"}
    if trace_div is None and a.trace:
        differing = [k for k, v in equal.items() if not v]
        return out | {
            "verdict": "metrics_identical",
            "reason": f"trace equal; differs: {', '.join(differing)}",
        }
    return out | {
        "verdict": "diverged",
        "divergence": _divergence(a, b, trace_div, files, equal, a_state, b_state),
    }


def _failed(side: str, r: Result) -> str:
    if r.error is None:
        return f"{side} {r.status.value}"
    first = (r.error.message.strip().splitlines() or [""])[0][:160]
    return f"{side} {r.status.value} ({r.error.type}: {first})"


def _divergence(
    a: Result,
    b: Result,
    trace_div: dict[str, Any] | None,
    files: dict[str, str],
    equal: dict[str, bool],
    a_state: Path | None,
    b_state: Path | None,
) -> dict[str, Any]:
    div: dict[str, Any] = {}
    if trace_div is not None:
        div.update(step=trace_div["step"], differs=trace_div["differs"], metrics=trace_div["metrics"])
        if trace_div["data_order_first"]:
            div["first"] = "data order"
        elif "note" in trace_div:
            div["note"] = trace_div["note"]
    tensor = first_tensor(a, b, trace_div["step"] if trace_div else None)
    if tensor is not None:
        div["tensor"] = tensor["tensor"]
        div["tensor_step"] = tensor["step"]
        if a_state is not None and b_state is not None:
            div.update(tensor_delta(a_state, b_state, tensor["tensor"]) or {})
    if trace_div is None:
        first_file = next((f for f, s in files.items() if s != "same"), None)
        differing = sorted(k for k, v in equal.items() if not v)
        div["differs"] = differing
        if first_file:
            div["file"] = first_file
    deltas = [m for m in div.get("metrics", {}).values() if "abs" in m]
    if deltas:
        div["max_abs"] = max(m["abs"] for m in deltas)
        div["max_rel"] = max(m["rel"] for m in deltas)
    return div


def tensor_delta(a_state: Path, b_state: Path, name: str) -> dict[str, Any] | None:
    """Max abs/rel difference of one tensor in the two runs' saved final states."""
    try:
        ta, tb = read_tensor(a_state, name), read_tensor(b_state, name)
    except (OSError, KeyError, ValueError):
        return None
    if ta is None or tb is None or ta.shape != tb.shape:
        return None
    diff = np.abs(ta - tb)
    scale = np.maximum(np.abs(ta), np.abs(tb))
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    return {"tensor_max_abs": float(diff.max(initial=0.0)), "tensor_max_rel": float(rel.max(initial=0.0))}


_NP = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
    "BF16": "<u2",
}


def read_tensor(path: Path, name: str) -> np.ndarray | None:
    """One tensor of a safetensors-layout file, as float64 (bfloat16 widened exactly)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        if name not in header:
            return None
        meta = header[name]
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(end - start), dtype=_NP[meta["dtype"]])
    if meta["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float64).reshape(meta["shape"])
