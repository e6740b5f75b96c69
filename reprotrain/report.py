"""The event stream a job writes while it runs: metrics per step, parameter digests, warnings.

One JSON object per line in the file named by ``REPROTRAIN_EVENTS``, flushed as written, so a
follower sees progress live and a crash loses nothing already logged. Scripts use the one-line
API ``reprotrain.report.log(step, loss=...)``; outside reprotrain it does nothing.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from reprotrain.errors import ResultInvalid
from reprotrain.hashing import encode_metric
from reprotrain.wire import JobEnv


class EventWriter:
    """Appends events to one file; safe to share between threads of a process."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the job

    def write(self, kind: str, **fields: Any) -> None:
        self.write_many([(kind, fields)])

    def write_many(self, events: list[tuple[str, dict[str, Any]] | str]) -> None:
        """Several events at once: one write, one flush. An event is a kind and its fields, or
        its line as `encode_event` writes it."""
        lines = "".join(e if isinstance(e, str) else encode_event(*e) for e in events)
        with self._lock:
            self._file.write(lines)
            self._file.flush()

    def replace(self, data: bytes) -> None:
        """The whole file becomes `data` (a resumed run's events up to its checkpoint)."""
        with self._lock:
            self._file.flush()
            self._file.truncate(0)  # opened for appending: the next write goes after `data`
            self._file.write(data.decode("utf-8"))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def encode_event(kind: str, fields: dict[str, Any]) -> str:
    """An event's line in the stream: compact JSON and a newline."""
    return json.dumps({"kind": kind, **fields}, separators=(",", ":"), allow_nan=False) + "\n"


_writer: EventWriter | None = None
_writer_pid: int | None = None


def _default_writer() -> EventWriter | None:
    global _writer, _writer_pid
    path = os.environ.get(JobEnv.EVENTS)
    if not path:
        return None
    if _writer is None or _writer_pid != os.getpid():  # a forked process opens its own
        _writer, _writer_pid = EventWriter(path), os.getpid()
    return _writer


def encode_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in metrics.items():
        try:
            out[name] = encode_metric(value)
        except TypeError as e:
            raise TypeError(f"metric {name!r}: {e}") from None
    return out


def progress_total(n: Any) -> int | None:
    """A job's declared number of steps, checked (a bool or a negative count is a mistake)."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"total steps must be a non-negative int, not {n!r}")
    return n


_declared_total: int | None = None
# set in a copy a bisect or pre-flight records (reprotrain.job.oprecord): sees every logged step
_recording_hook: Any = None


def log(step: int, total: int | None = None, **metrics: Any) -> None:
    """Record metrics for one step of a script-mode job (no-op when not run by reprotrain).
    `total` (not a metric) is how many steps there will be: `submit --wait` shows a bar and ETA."""
    global _declared_total
    writer = _default_writer()
    if writer is not None:
        if total is not None and progress_total(total) != _declared_total:
            _declared_total = total
            writer.write("progress", total=total)
        encoded = encode_metrics(metrics)
        writer.write("metric", step=int(step), metrics=encoded)
        if _recording_hook is not None:
            _recording_hook(int(step), encoded)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every complete event in the file; a torn last line (a killed job) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    events = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ResultInvalid(f"{p}: line {n} is not JSON") from e
    return events
