"""A finished run is never lost to a database outage or a worker restart.

The worker keeps each finished attempt's result beside the job's directories, where the job
cannot write (`<jobs>/<id>/attempt-N.result.json`), until the database has it. `finish` is
retried with backoff while the database is unavailable; a job delivered again after a worker
restart whose earlier attempt finished is stored from that record, not run again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprotrain.errors import ResultInvalid
from reprotrain.files import write_atomic
from reprotrain.result import Result, load_result
from reprotrain.store.repo import store_unavailable

log = logging.getLogger("reprotrain.worker")
MAX_DELAY_S = 2.0  # between retries: short, so the worker's commit lands soon after the database is back


def record_path(job_dir: Path) -> Path:
    """Where an attempt's finished result waits for the database: beside its directory."""
    return job_dir.with_name(f"{job_dir.name}.result.json")


def keep(result: Result, job_dir: Path) -> None:
    write_atomic(record_path(job_dir), result.model_dump_json())


def finished_attempt(jobs_dir: Path, job_id: str) -> tuple[Result, Path] | None:
    """The newest earlier attempt of this job that finished but was never stored, with its dir."""
    for record in sorted((jobs_dir / job_id).glob("attempt-*.result.json"), key=_attempt, reverse=True):
        job_dir = record.with_name(record.name.removesuffix(".result.json"))
        try:
            result, _ = load_result(record)
        except ResultInvalid:
            log.warning("unreadable finished-attempt record %s; ignored", record)
            continue
        if job_dir.is_dir():
            return result, job_dir
    return None


def _attempt(record: Path) -> int:
    try:
        return int(record.name.split(".")[0].removeprefix("attempt-"))
    except ValueError:
        return -1


def retry_while_unavailable(commit: Callable[[], Any], give_up_after_s: float, what: str) -> Any:
    """commit(), again and again with backoff while the database is unavailable (for at most
    give_up_after_s); any other error, or the deadline, raises."""
    deadline, delay = time.monotonic() + give_up_after_s, 0.2
    while True:
        try:
            return commit()
        except Exception as e:
            if not store_unavailable(e) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "%s: the database is unavailable (%s); retrying in %.1f s", what, type(e).__name__, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
