"""What the routes do, as plain functions over the store and the queue."""

from __future__ import annotations

import json
from typing import Any

from reprotrain.errors import NotFound, SpecInvalid
from reprotrain.result import Status
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.tables import JobRow
from service.dispatch import Dispatcher


def submit(store: Store, dispatch: Dispatcher, body: Any) -> JobRow:
    spec = parse_spec(body)
    if spec.bundle is not None and not store.has_bundle(spec.bundle):
        raise NotFound(f"unknown bundle {spec.bundle}; upload it with POST /v1/bundles first", field="bundle")
    row = store.create_job(spec)
    dispatch.submit(row.id, row.queue)  # after the commit: a lost send is re-sent by the reconciler
    return row


def rerun(store: Store, dispatch: Dispatcher, job_id: str) -> JobRow:
    """A new job with the original's exact spec (bundle and seed included), linked to it."""
    original = store.get_job(job_id)
    row = store.create_job(parse_spec(original.spec), rerun_of=original.id)
    dispatch.submit(row.id, row.queue)
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
