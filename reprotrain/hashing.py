"""Canonical JSON and the content hashes every digest in reprotrain is made of."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from blake3 import blake3

HASH_NAME = "blake3"
_CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the one byte form a digest is taken of."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest_bytes(data: bytes | memoryview) -> str:
    return blake3(data).hexdigest()


def digest_json(obj: Any) -> str:
    return digest_bytes(canonical_json(obj))


def digest_file(path: Path, check: Callable[[], None] | None = None) -> str:
    """Hash a file's bytes in chunks; blake3 keeps this near memory bandwidth. `check` runs
    between chunks (it raises to stop: a deadline, a cancel)."""
    h = blake3()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            if check is not None:
                check()
    return h.hexdigest()


def digest_named(items: Iterable[tuple[str, str]]) -> str:
    """Overall digest of named digests: order-independent, names included."""
    h = blake3()
    for name, dig in sorted(items):
        h.update(canonical_json([name, dig]))
    return h.hexdigest()


def encode_float(value: float) -> float | str:
    """JSON has no NaN or infinities; keep them as strings so they still compare exactly."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def encode_metric(value: Any) -> Any:
    """A metric as stored: bools and ints as they are, floats as float64 (repr round-trips)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if hasattr(value, "item"):  # a torch or numpy scalar
        value = value.item()
        return encode_metric(value)
    if isinstance(value, float):
        return encode_float(value)
    raise TypeError(f"metric values must be numbers or strings, got {type(value).__name__}")


def decode_float(value: Any) -> Any:
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value
