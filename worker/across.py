"""Side b of a bisect across environments: after its own recording, wait for side a's job (on a
worker of the other environment), then compare the two recordings into side b's `BisectReport`.

The recordings are the jobs' own files, so they are opened in a bounded child with torch
(`python -m reprotrain.job.oprecord`), like checkpoints; the worker process never imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from reprotrain.artifacts import ArtifactStore
from reprotrain.bisect import BisectReport
from reprotrain.errors import NotFound, ReprotrainError
from reprotrain.fingerprint import diff, static_digest
from reprotrain.job.checkpoints import run_bounded
from reprotrain.result import Result
from reprotrain.spec import JobSpec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.stored_verdicts import stored_result
from reprotrain.wire import env_queue, job_artifact, side_stream

log = logging.getLogger("reprotrain.worker")
POLL_S = 0.5


def compare_sides(
    store: Store,
    artifacts: ArtifactStore,
    spec: JobSpec,
    result: Result,
    job_dir: Path,
    cancel: threading.Event,
    owner: str,
) -> Result:
    """Side b's result with the report of the two sides, once side a has ended (or why not)."""
    assert spec.bisect is not None and spec.bisect.partner is not None
    started = time.monotonic()
    report = _report(store, artifacts, spec, result, job_dir, cancel, owner)
    report = report.model_copy(
        update={"a": spec.bisect.a, "b": spec.bisect.b, "seconds": round(time.monotonic() - started, 3)}
    )
    return result.model_copy(update={"bisect": report})


def _report(
    store: Store,
    artifacts: ArtifactStore,
    spec: JobSpec,
    result: Result,
    job_dir: Path,
    cancel: threading.Event,
    owner: str,
) -> BisectReport:
    partner = spec.bisect.partner  # type: ignore[union-attr]
    if partner == result.job_id:
        return _not_compared("side b names itself as side a")
    deadline = time.monotonic() + spec.timeout_s
    while True:
        try:
            row = store.get_job(partner, light=True)
        except NotFound:
            return _not_compared(f"side a's job {partner} does not exist")
        if Status(row.status).is_final:
            break
        if cancel.is_set() or time.monotonic() > deadline:
            why = "canceled" if cancel.is_set() else f"did not end within {spec.timeout_s:.0f} s"
            return _not_compared(f"side a's recording (job {partner}) {why}")
        cancel.wait(POLL_S)
    ours = job_dir / side_stream("b")
    names = {a.name: a.digest for a in store.artifacts(partner)}
    digest = names.get(job_artifact(side_stream("a")))
    if digest is None:
        return _not_compared(f"side a's job {partner} ended {row.status} without a recording")
    if not ours.is_file():
        return _not_compared("this side's copy ended without a recording (see its stderr)")
    try:
        theirs = artifacts.verified(digest, f"side a's recording of job {partner}")
    except ReprotrainError as e:
        return _not_compared(f"side a's recording cannot be read: {e}")
    found = run_bounded("reprotrain.job.oprecord", [theirs, ours])
    if "error" in found:
        return _not_compared(f"the recordings were not compared: {found['error']}")
    report = BisectReport.model_validate(found["value"])
    return report.model_copy(update={"environment": _environments(store, partner, row, result, owner)})


def _environments(store: Store, partner: str, row: Any, result: Result, owner: str) -> str | None:
    full = store.get_job(partner)
    if full.result is None or result.fingerprint is None:
        return None
    theirs = stored_result(partner, full.result).fingerprint
    if theirs is None:
        return None
    a, b = theirs.model_dump(mode="json"), result.fingerprint.model_dump(mode="json")
    rows = [r for r in diff(a, b) if r["likely_cause"]]
    said = "; ".join(f"{r['label']} ({r['key']}): {r['a']} vs {r['b']}" for r in rows[:6])
    return (
        f"side a ran on {row.lease_owner or 'a worker'} ({env_queue(static_digest(a))}), side b on "
        f"{owner} ({env_queue(static_digest(b))})"
        + (f"; where their environments differ: {said}" if said else "; no likely cause differs")
    )


def _not_compared(why: str) -> BisectReport:
    return BisectReport(found="ended", summary=f"not compared: {why}")
