"""Differences in numbers, exact: metric values, the per-step trace, tensors of saved states."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from reprotrain.hashing import decode_float
from reprotrain.result import Result, TraceEntry


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


def step_kind(digest: str | None) -> str | None:
    """What made a per-step parameter digest: "xxh3" (host), "sum64" (on the GPU) or
    "mixed.<tag>" (some of each, the tag saying which is which), as its prefix says; "blake3" for
    traces stored before per-step digests had kinds."""
    if digest is None:
        return None
    kind, sep, _ = digest.partition(":")
    return kind if sep else "blake3"


def step_kind_of(tensors: dict[str, str]) -> str:
    """The overall per-step digest's kind: its entries' one kind, or "mixed.<tag>", the tag a
    hash of which entry has which kind. Two mixed traces are compared only where every entry
    has the same kind in both: a buffer on the host in one run and on the GPU in the other
    changes the tag, not a verdict. (No entries at all: "mixed", as always.)"""
    kinds = {name: step_kind(d) for name, d in tensors.items()}
    distinct = set(kinds.values())
    if len(distinct) == 1:
        return distinct.pop()
    if not kinds:
        return "mixed"
    return "mixed." + hashlib.blake2b(repr(sorted(kinds.items())).encode(), digest_size=8).hexdigest()


def comparable_params(x: str | None, y: str | None) -> bool:
    """Whether two per-step digests can be compared: both runs took one at that step (runs with
    another `track.digest_every` take them at other steps), of the same kind. Digests of
    different kinds, or a step one run did not digest, say nothing; the final state decides."""
    return x is not None and y is not None and step_kind(x) == step_kind(y)


CHAIN = "chain:"  # a data-order digest kept as a hash chain (a run that checkpoints; job/context.py)


def same_data(x: str | None, y: str | None) -> bool | None:
    """Whether two steps' data-order digests say the same batches came in the same order; None
    when they cannot say: one is a hash chain (its run checkpointed) and the other the plain
    digest, two forms of the order that never agree. A chain stored before chains were marked
    is the marked one's value unmarked, and agrees with it."""
    if x == y:
        return True
    if x is None or y is None or x.startswith(CHAIN) == y.startswith(CHAIN):
        return False
    return True if x.removeprefix(CHAIN) == y.removeprefix(CHAIN) else None


def unmatched_digests(a: Result, b: Result) -> list[str]:
    """What the traces cannot compare step by step though both have it: the data order where one
    run kept it as a chain, parameters where the runs digested at other steps."""
    pairs = list(zip(a.trace, b.trace, strict=False))
    out = []
    if any(same_data(x.data, y.data) is None for x, y in pairs):
        out.append(
            "the data order is kept in another form in one run (it checkpointed): it is not "
            "compared step by step"
        )
    if any((x.params is None) != (y.params is None) for x, y in pairs):
        out.append(
            "the runs digested their parameters at other steps (track.digest_every): they are "
            "compared at the steps both digested"
        )
    return out


def param_kinds(a: Result, b: Result) -> tuple[str, str] | None:
    """The kinds of per-step digests of two runs, where they differ (their traces' parameters
    are then not compared)."""
    ka = next((step_kind(e.params) for e in a.trace if e.params), None)
    kb = next((step_kind(e.params) for e in b.trace if e.params), None)
    return (ka, kb) if ka and kb and ka != kb else None


def _entry_differs(x: TraceEntry, y: TraceEntry) -> list[str]:
    what = []
    if x.step != y.step:
        what.append("step")
    if same_data(x.data, y.data) is False:
        what.append("data_order")
    if x.params != y.params and comparable_params(x.params, y.params):
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
        if mine is None or mine.overall == p.overall or not comparable_params(mine.overall, p.overall):
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


def _header(f: Any) -> tuple[int, dict[str, Any]]:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 100 << 20:
        raise ValueError("not a safetensors file (header too large)")
    return n, json.loads(f.read(n))


def safetensors_names(path: Path) -> list[str]:
    """The tensor names of a safetensors-layout file, in the file's order."""
    with open(path, "rb") as f:
        _, header = _header(f)
    return [k for k in header if k != "__metadata__"]


def read_tensor(path: Path, name: str, *, widen: bool = True) -> np.ndarray | None:
    """One tensor of a safetensors-layout file: as float64 (widened exactly), or as stored
    (bfloat16 as the float32 it is exactly)."""
    with open(path, "rb") as f:
        n, header = _header(f)
        if name not in header:
            return None
        meta = header[name]
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(end - start), dtype=_NP[meta["dtype"]])
    if meta["dtype"] == "BF16":
        raw = (raw.astype(np.uint32) << 16).view(np.float32)
    return (raw.astype(np.float64) if widen else raw.copy()).reshape(meta["shape"])
