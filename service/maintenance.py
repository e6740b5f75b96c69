"""Reaper, reconciler and retention: jobs whose worker died go back to the queue, lost messages are
re-sent, and (with REPROTRAIN_RETENTION_DAYS) old jobs and the files no job holds are deleted."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from reprotrain.artifacts import ArtifactStore
from reprotrain.broker import Broker
from reprotrain.errors import Conflict, NotFound
from reprotrain.joblog import job_event
from reprotrain.service.metrics import ApiMetrics
from reprotrain.settings import Settings
from reprotrain.store import Store
from reprotrain.store.repo import as_utc, store_unavailable

log = logging.getLogger("reprotrain.maintenance")


def maintain_once(
    store: Store, sender: Broker, settings: Settings, reap: bool = True
) -> dict[str, list[str]]:
    """One pass: requeue, cancel or fail expired leases, then re-send QUEUED jobs the broker may
    have lost, queue by queue.

    A job sent long ago whose message is still in its queue is waiting behind a backlog, not
    lost: it is left alone. Where the broker can list a queue (Redis) that is known exactly, and a
    job whose message is gone is re-sent; elsewhere a job is re-sent once its queue has drained.
    A job never sent is sent whatever its queue holds. Each queue is scanned on its own, so a
    backlog on one never hides a lost job on another.
    """
    requeued = store.reap(settings.max_attempts) if reap else []
    resent = [j for j in requeued if _send(store, sender, j)]
    for queue in store.stale_queues(settings.resend_after_s):
        held = sender.queued_ids(queue)  # exact where the broker can list a queue (Redis)
        waiting = held is None and bool(sender.queue_depth(queue))
        for job_id in store.stale_queued(settings.resend_after_s, queue=queue, unsent_only=waiting):
            if job_id not in requeued and job_id not in (held or ()) and _send(store, sender, job_id, queue):
                resent.append(job_id)
    for job_id in requeued:
        job_event("requeued", job_id, reason="lease expired")
    for job_id in resent:
        job_event("resent", job_id)
    return {"requeued": requeued, "resent": resent}


def _send(store: Store, sender: Broker, job_id: str, queue: str | None = None) -> bool:
    try:
        sender.send([(job_id, queue or store.get_job(job_id).queue)])
    except Exception:
        log.exception("re-sending job %s failed", job_id)
        return False
    store.mark_sent(job_id)
    return True


def retain(store: Store, artifacts: ArtifactStore, settings: Settings) -> dict[str, int]:
    """The retention sweep: delete ended jobs older than REPROTRAIN_RETENTION_DAYS (re-runs before
    their originals; an original with a kept re-run is kept), then every stored file no job holds."""
    deleted = 0
    if settings.retention_days is not None:
        before = datetime.now(UTC) - timedelta(days=settings.retention_days)
        while batch := store.expired(before):
            progress = 0
            for job_id in batch:
                try:
                    store.delete_job(job_id)
                except (Conflict, NotFound):  # a re-run submitted meanwhile, or deleted by a user
                    continue
                progress += 1
                remove_job_dir(settings, job_id)
                job_event("deleted", job_id, reason="retention")
            deleted += progress
            if not progress:
                break
    files, size = artifacts.sweep(store.referenced, settings.artifact_grace_s)
    if deleted or files:
        log.info("retention: deleted %d jobs, %d stored files (%d bytes)", deleted, files, size)
    return {"jobs": deleted, "files": files, "bytes": size}


def remove_job_dir(settings: Settings, job_id: str) -> None:
    """A deleted job's working directory, where this process can see it (the embedded worker's)."""
    if len(job_id) == 32 and job_id.isalnum():
        shutil.rmtree(settings.jobs / job_id, ignore_errors=True)


class Maintenance(threading.Thread):
    def __init__(
        self,
        store: Store,
        open_broker: Callable[[], Broker],
        settings: Settings,
        metrics: ApiMetrics | None = None,
    ) -> None:
        super().__init__(name="reprotrain-maintenance", daemon=True)
        self.store, self.open_broker, self.settings = store, open_broker, settings
        self.metrics = metrics
        self.seen_until = datetime.now(UTC)  # jobs that ended after this are counted once
        self.stopped = threading.Event()

    def count_ended(self) -> None:
        if self.metrics is None:
            return
        while rows := self.store.ended_since(self.seen_until):
            self.metrics.observe_finished(rows)
            self.seen_until = as_utc(rows[-1][2])
            if len(rows) < 1000:
                break

    def run(self) -> None:
        """Passes until stopped. After the database was unavailable, leases are not reaped for one
        lease period: every lease ran out while nobody could renew it, and live workers renew
        theirs within a heartbeat of its return (a finished run is stored, not run again)."""
        sender = self.open_broker()  # this thread's own connection
        artifacts = ArtifactStore(self.settings.artifacts)
        hold_until = 0.0
        retain_at = time.monotonic() + self.settings.maintenance_s  # not in the way of a start
        while not self.stopped.wait(self.settings.maintenance_s):
            try:
                done = maintain_once(self.store, sender, self.settings, reap=time.monotonic() >= hold_until)
                if self.metrics is not None:
                    self.metrics.requeued.inc(len(done["requeued"]))
                    self.metrics.resent.inc(len(done["resent"]))
                self.count_ended()
                if time.monotonic() >= retain_at:
                    retain_at = time.monotonic() + self.settings.retention_every_s
                    retain(self.store, artifacts, self.settings)
            except Exception as e:
                if store_unavailable(e):
                    hold_until = time.monotonic() + self.settings.lease_s
                    log.warning("maintenance: the database is unavailable (%s)", type(e).__name__)
                else:
                    log.exception("maintenance pass failed")
        sender.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
