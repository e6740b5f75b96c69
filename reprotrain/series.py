"""A trace as chart series: per-step metric columns, downsampled on the server for long traces.

A trace of 100,000 steps is too much to draw point by point, and plain decimation would hide
the spikes a user looks for. `series` splits the requested step range into buckets and keeps, for
every metric, the first, last, smallest and largest value of each bucket (the shape of the curve
at any zoom that shows one bucket per pixel column), plus the steps the caller must see (a
divergence). A range with no more entries than asked for comes back exact: every entry.

`Columns` is the trace parsed once into arrays; a finished job's never changes, so a server can
keep it (`ColumnCache`) and answer every zoom from it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_POINTS = 20_000
DEFAULT_POINTS = 2_000


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v) if math.isfinite(v) else math.nan


@dataclass(frozen=True)
class Columns:
    """Steps in order, and each numeric metric as floats (NaN: not logged there, or not a number)."""

    steps: np.ndarray
    metrics: dict[str, np.ndarray]

    @classmethod
    def of(cls, trace: Sequence[dict[str, Any]]) -> Columns:
        entries = sorted((e for e in trace if type(e.get("step")) is int), key=lambda e: e["step"])
        names = sorted({k for e in entries for k in (e.get("metrics") or {})})
        metrics = {}
        for n in names:
            col = np.fromiter(
                (_number((e.get("metrics") or {}).get(n)) for e in entries),
                dtype=np.float64,
                count=len(entries),
            )
            if not np.isnan(col).all():
                metrics[n] = col
        return cls(np.fromiter((e["step"] for e in entries), dtype=np.int64, count=len(entries)), metrics)

    @property
    def size(self) -> int:
        return len(self.steps) * (1 + len(self.metrics))


def series(
    trace: Sequence[dict[str, Any]] | Columns,
    *,
    points: int = DEFAULT_POINTS,
    start: int | None = None,
    end: int | None = None,
    keep: Iterable[int] = (),
) -> dict[str, Any]:
    """Columns {count, exact, steps, metrics: {name: [value | None]}} of the entries with
    start <= step <= end: every one (`exact`) when they fit in `points`; otherwise each metric's
    first, last, minimum and maximum per bucket of about 4/points of the range, and every step in
    `keep`."""
    cols = trace if isinstance(trace, Columns) else Columns.of(trace)
    lo = 0 if start is None else int(np.searchsorted(cols.steps, start, "left"))
    hi = len(cols.steps) if end is None else int(np.searchsorted(cols.steps, end, "right"))
    hi = max(lo, hi)
    n = hi - lo
    if n <= points:
        chosen = np.arange(lo, hi)
    else:
        picked = [np.array([lo, hi - 1])]
        buckets = max(1, points // 4)
        edges = lo + (np.arange(buckets + 1) * n) // buckets
        picked += [edges[:-1], edges[1:] - 1]
        for col in cols.metrics.values():
            picked += _extremes(col[lo:hi], edges - lo, lo)
        kept = np.asarray(sorted(set(keep)), dtype=np.int64)
        at = np.searchsorted(cols.steps, kept)
        inside = (at >= lo) & (at < hi)
        at, kept = at[inside], kept[inside]
        picked.append(at[cols.steps[at] == kept])
        chosen = np.unique(np.concatenate(picked))
    return {
        "count": n,
        "exact": n <= points,
        "steps": cols.steps[chosen].tolist(),
        "metrics": {name: _plain(col[chosen]) for name, col in cols.metrics.items()},
    }


def _extremes(col: np.ndarray, edges: np.ndarray, offset: int) -> list[np.ndarray]:
    """The index of the minimum and of the maximum of each bucket [edges[i], edges[i+1])."""
    out = []
    for fill, pick in ((np.inf, np.argmin), (-np.inf, np.argmax)):
        filled = np.where(np.isnan(col), fill, col)
        for width in np.unique(np.diff(edges)):  # buckets differ in width by at most one entry
            starts = edges[:-1][np.diff(edges) == width]
            if width == 0 or not len(starts):
                continue
            windows = filled[starts[:, None] + np.arange(width)]
            best = pick(windows, axis=1)
            real = np.isfinite(windows[np.arange(len(starts)), best])
            out.append((starts + best)[real] + offset)
    return out


def _plain(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


class ColumnCache:
    """Parsed traces of finished jobs, least recently used dropped past `max_values` values."""

    def __init__(self, max_values: int = 20_000_000) -> None:
        self.max_values = max_values
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Columns] = OrderedDict()
        self._values = 0

    def drop(self, key: str) -> None:
        with self._lock:
            if (cols := self._items.pop(key, None)) is not None:
                self._values -= cols.size

    def get(self, key: str, load: Callable[[], Sequence[dict[str, Any]]]) -> Columns:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        cols = Columns.of(load())
        with self._lock:
            if key not in self._items and cols.size <= self.max_values:
                self._items[key] = cols
                self._values += cols.size
                while self._values > self.max_values:
                    _, dropped = self._items.popitem(last=False)
                    self._values -= dropped.size
        return cols
