"""One log line per job event, carrying the job id: what an operator greps for, or (with
REPROTRAIN_LOG_FORMAT=json) what a log pipeline parses. The API logs `submitted` and `sent`, a
worker `claimed`, `started`, `verdict` and `finished`, the maintenance loop `resent`, `requeued`
and `deleted`.

    2026-11-28 09:12:01,532 INFO reprotrain.jobs: job 3fa9c2… finished status=SUCCEEDED duration_s=4.47
    {"ts": "2026-11-28T09:12:01.532+00:00", "level": "info", "logger": "reprotrain.jobs",
     "message": "job 3fa9c2… finished …", "job_id": "3fa9c2…", "event": "finished", "status": …}
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

log = logging.getLogger("reprotrain.jobs")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RESERVED = {"ts", "level", "logger", "message", "job_id", "event", "exc"}
_batch = threading.local()  # .lines: what LineHandler holds back inside batched(), on this thread


def job_event(event: str, job_id: str, **fields: Any) -> None:
    """Log `event` of `job_id` at INFO, with its fields (None ones left out)."""
    if not log.isEnabledFor(logging.INFO):
        return
    given = {k: v for k, v in fields.items() if v is not None}
    text = "".join(f" {k}={v}" for k, v in given.items())
    log.info("job %s %s%s", job_id, event, text, extra={"job_id": job_id, "event": event, "fields": given})


@contextmanager
def batched() -> Iterator[None]:
    """Lines logged on this thread inside it go out at its end, one write and one flush per
    handler (`LineHandler`), in order: the API's burst of job events after a group commit or a
    publish, which wrote and flushed each line on its own, a tenth of a submit's CPU. Nested, the
    outermost writes."""
    if getattr(_batch, "lines", None) is not None:
        yield
        return
    lines: list[tuple[LineHandler, logging.LogRecord, str]] = []
    _batch.lines = lines
    try:
        yield
    finally:
        _batch.lines = None
        by_handler: dict[LineHandler, list[tuple[logging.LogRecord, str]]] = {}
        for handler, record, line in lines:
            by_handler.setdefault(handler, []).append((record, line))
        for handler, held in by_handler.items():
            handler.write_held(held)


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, inside `batched()`, holds each formatted line back for one write."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(_batch, "lines", None)
        if lines is None:
            super().emit(record)
            return
        try:
            lines.append((self, record, self.format(record) + self.terminator))
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:  # noqa: BLE001 - as logging's own emit: a bad record never raises
            self.handleError(record)

    def write_held(self, held: list[tuple[logging.LogRecord, str]]) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write("".join(line for _, line in held))
                self.flush()
            except Exception:  # noqa: BLE001 - as logging's own emit: a closed stream never raises
                self.handleError(held[-1][0])


class TextFormatter(logging.Formatter):
    """`TEXT`, each second's date and time text made once (time.strftime per line was as dear as
    the rest of its formatting)."""

    def __init__(self) -> None:
        super().__init__(TEXT)
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads read a matching pair

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)  # type: ignore[operator]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a job event's id and fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("job_id", "event"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        for key, value in (getattr(record, "fields", None) or {}).items():
            out[key if key not in _RESERVED else f"field_{key}"] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(
    fmt: Literal["text", "json"] = "text", level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """The process's one log handler, on stderr: plain lines, or JSON lines. Neither format shows
    a record's thread, process or source line, so no record looks them up (the logging HOWTO's
    "Optimization": a submit logs two lines per job, and finding the caller's frame was most of
    their cost)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
