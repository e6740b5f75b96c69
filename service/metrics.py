"""The API's Prometheus metrics (prometheus-client), named by its conventions.

Counted in this process: HTTP requests by route template and status, jobs submitted, and what the
maintenance loop sees: jobs that ended (with their run time), re-sends and requeues. Read from the
database at each scrape: jobs by status, queue depth per queue, running jobs. Counters start from
zero when the API restarts, as Prometheus expects of counters.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select

from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.repo import as_utc
from reprotrain.store.tables import JobRow

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_JOB_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class ApiMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Histogram(
            "reprotrain_http_request_duration_seconds",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.submitted = Counter(
            "reprotrain_jobs_submitted", "jobs stored by this API", ["queue", "kind"], registry=r
        )
        self.finished = Counter(
            "reprotrain_jobs_finished", "jobs that ended, by final status", ["status"], registry=r
        )
        self.duration = Histogram(
            "reprotrain_job_duration_seconds",
            "a job's time from claimed to ended, by final status",
            ["status"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.resent = Counter("reprotrain_reconciler_resent", "jobs re-sent to the broker", registry=r)
        self.requeued = Counter("reprotrain_reaper_requeued", "jobs whose lease ran out", registry=r)
        self.jobs = Gauge("reprotrain_jobs", "jobs by status", ["status"], registry=r)
        self.queue_depth = Gauge("reprotrain_queue_depth", "queued jobs per queue", ["queue"], registry=r)
        self.running = Gauge("reprotrain_jobs_running", "jobs running now", registry=r)
        self.workers_live = Gauge("reprotrain_workers_live", "workers heard from lately", registry=r)
        self.worker_seen = Gauge(
            "reprotrain_worker_last_seen_timestamp_seconds",
            "when each live worker last said it was alive, with its static environment's digest",
            ["worker", "static_digest"],
            registry=r,
        )
        self._queues: set[str] = set()

    def scrape(self, store: Store, ttl_s: float = 30.0) -> None:
        """Set the gauges read from the database."""
        now = time.time()
        self.worker_seen.clear()  # a worker gone is absent, not stale
        live = 0
        for w in store.workers():
            seen = as_utc(w.last_seen_at).timestamp()
            if now - seen < ttl_s:
                live += 1
                self.worker_seen.labels(w.id, w.static_digest or "").set(seen)
        self.workers_live.set(live)
        with store.session() as s:
            by_status = dict(s.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all())
            queued = dict(
                s.execute(
                    select(JobRow.queue, func.count())
                    .where(JobRow.status == Status.QUEUED.value)
                    .group_by(JobRow.queue)
                ).all()
            )
        for status in Status:
            self.jobs.labels(status.value).set(by_status.get(status.value, 0))
        self.running.set(by_status.get(Status.RUNNING.value, 0))
        self._queues |= set(queued)
        for queue in self._queues:  # a queue seen once reads 0 when drained, not absent
            self.queue_depth.labels(queue).set(queued.get(queue, 0))

    def observe_finished(self, rows: list[Any]) -> None:
        for status, started, finished in rows:
            self.finished.labels(status).inc()
            if started is not None and finished is not None:
                self.duration.labels(status).observe(max(0.0, (finished - started).total_seconds()))


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """ASGI middleware: each HTTP request's duration under its route template (`/v1/jobs/{job_id}`,
    never the id itself), method and status; a path no route matched is `unmatched`, a method
    HTTP does not define `other` (a client cannot make up series). Each label set's child is
    looked up once."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics
        self._children: dict[tuple[str, str, int], Any] = {}  # bounded: methods, routes, statuses

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - start
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            child = self._children.get(key := (method, route, status))
            if child is None:
                child = self._children[key] = self.metrics.requests.labels(method, route, str(status))
            child.observe(elapsed)
