"""A trace as chart series: per-step metric columns, downsampled on the server for long traces.

A trace of 100,000 steps is too much to draw point by point, and plain decimation would hide
the spikes a user looks for. `series` splits the requested step range into buckets and keeps, for
every metric, the first, last, smallest and largest value of each bucket (the shape of the curve
at any zoom that shows one bucket per pixel column), plus the steps the caller must see (a
divergence). A range with no more entries than asked for comes back exact: every entry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

MAX_POINTS = 20_000
DEFAULT_POINTS = 2_000


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def series(
    trace: Sequence[dict[str, Any]],
    *,
    points: int = DEFAULT_POINTS,
    start: int | None = None,
    end: int | None = None,
    keep: Iterable[int] = (),
) -> dict[str, Any]:
    """Columns {steps, metrics: {name: [value | None]}} of the entries with start <= step <= end.

    `exact` says every entry in the range is there; otherwise each metric keeps its first, last,
    minimum and maximum per bucket of about 4/points of the range, and every step in `keep`."""
    entries = [
        e
        for e in trace
        if isinstance(e.get("step"), int)
        and (start is None or e["step"] >= start)
        and (end is None or e["step"] <= end)
    ]
    entries.sort(key=lambda e: e["step"])
    names = sorted(
        {k for e in entries for k, v in (e.get("metrics") or {}).items() if _number(v) is not None}
    )
    columns = {n: [_number((e.get("metrics") or {}).get(n)) for e in entries] for n in names}
    exact = len(entries) <= points
    if exact:
        chosen = range(len(entries))
    else:
        chosen = sorted(_m4(columns, len(entries), max(1, points // 4)) | _at(entries, set(keep)))
    return {
        "count": len(entries),
        "exact": exact,
        "steps": [entries[i]["step"] for i in chosen],
        "metrics": {n: [col[i] for i in chosen] for n, col in columns.items()},
    }


def _at(entries: Sequence[dict[str, Any]], steps: set[int]) -> set[int]:
    return {i for i, e in enumerate(entries) if e["step"] in steps}


def _m4(columns: dict[str, list[float | None]], n: int, buckets: int) -> set[int]:
    """Indices of the first, last, min and max of each metric in each of `buckets` equal slices."""
    keep = {0, n - 1}
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if lo >= hi:
            continue
        keep.update((lo, hi - 1))
        for col in columns.values():
            best_lo = best_hi = None
            for i in range(lo, hi):
                v = col[i]
                if v is None:
                    continue
                if best_lo is None or v < col[best_lo]:  # type: ignore[operator]
                    best_lo = i
                if best_hi is None or v > col[best_hi]:  # type: ignore[operator]
                    best_hi = i
            if best_lo is not None:
                keep.update((best_lo, best_hi))  # type: ignore[arg-type]
    return keep
