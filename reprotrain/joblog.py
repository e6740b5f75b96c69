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
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("reprotrain.jobs")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RESERVED = {"ts", "level", "logger", "message", "job_id", "event", "exc"}


def job_event(event: str, job_id: str, **fields: Any) -> None:
    """Log `event` of `job_id` at INFO, with its fields (None ones left out)."""
    if not log.isEnabledFor(logging.INFO):
        return
    given = {k: v for k, v in fields.items() if v is not None}
    text = "".join(f" {k}={v}" for k, v in given.items())
    log.info("job %s %s%s", job_id, event, text, extra={"job_id": job_id, "event": event, "fields": given})


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


def configure(fmt: Literal["text", "json"] = "text", level: int = logging.INFO) -> None:
    """The process's one log handler, on stderr: plain lines, or JSON lines. Neither format shows
    a record's thread, process or source line, so no record looks them up (the logging HOWTO's
    "Optimization": a submit logs two lines per job, and finding the caller's frame was most of
    their cost)."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
