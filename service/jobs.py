"""What the routes do, as plain functions over the store and the queue."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery

from reprotrain.errors import NotFound, SpecInvalid
from reprotrain.result import Status
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.tables import JobRow
from worker.celery_app import send_job

log = logging.getLogger("reprotrain.api")


def enqueue(celery: Celery, row: JobRow) -> None:
    """Send after the row committed; if the broker is down the reconciler sends it later."""
    try:
        send_job(celery, row.id, row.queue)
    except Exception:
        log.exception("could not send job %s to the broker; the reconciler will retry", row.id)


def submit(store: Store, celery: Celery, body: Any) -> JobRow:
    spec = parse_spec(body)
    if spec.bundle is not None and not store.has_bundle(spec.bundle):
        raise NotFound(f"unknown bundle {spec.bundle}; upload it with POST /v1/bundles first", field="bundle")
    row = store.create_job(spec)
    enqueue(celery, row)
    return row


def rerun(store: Store, celery: Celery, job_id: str) -> JobRow:
    """A new job with the original's exact spec (bundle and seed included), linked to it."""
    original = store.get_job(job_id)
    row = store.create_job(parse_spec(original.spec), rerun_of=original.id)
    enqueue(celery, row)
    return row


def live_trace(store: Store, row: JobRow) -> list[dict[str, Any]]:
    """The stored trace of a finished job, or what the worker has shipped so far."""
    if row.result is not None:
        return list(row.result.get("trace") or [])
    raw = store.read_log(row.id, "events")
    out = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") == "metric":
            out.append(event)
    return out


def is_final(status: str) -> bool:
    return Status(status).final


def parse_status_filter(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        for s in v.split(","):
            s = s.strip().upper()
            if s not in Status.__members__:
                allowed = ", ".join(Status.__members__)
                raise SpecInvalid(f"unknown status {s!r}; one of {allowed}", field="status")
            out.append(s)
    return out
