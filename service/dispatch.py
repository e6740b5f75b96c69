"""Sending job ids to the broker off the request path.

A submit returns once the job row is committed (the durable point: DESIGN's "the database is the
source of truth"); one thread per API process then publishes the message, a burst through one
producer. If the process dies first, the reconciler re-sends the still-QUEUED job. So a slow or
unreachable broker (Celery retries a publish for seconds) never stalls a submit.
"""

from __future__ import annotations

import logging
import queue
import threading

from celery import Celery

from worker.celery_app import JobSender

log = logging.getLogger("reprotrain.api")
MAX_BURST = 256


class Dispatcher(threading.Thread):
    def __init__(self, celery: Celery) -> None:
        super().__init__(name="reprotrain-dispatch", daemon=True)
        self.celery = celery
        self.queue: queue.Queue[list[tuple[str, str]] | None] = queue.Queue()

    def submit(self, jobs: list[tuple[str, str]]) -> None:
        """Hand over (job id, queue) pairs whose rows are committed."""
        if jobs:
            self.queue.put(jobs)

    def run(self) -> None:
        sender = JobSender(self.celery)
        stopping = False
        while not stopping:
            burst: list[tuple[str, str]] = []
            item = self.queue.get()
            while True:
                if item is None:
                    stopping = True
                else:
                    burst.extend(item)
                if len(burst) >= MAX_BURST or self.queue.empty():
                    break
                item = self.queue.get_nowait()
            try:
                sender.send(burst)
            except Exception:
                log.exception("could not send %d job(s) to the broker; the reconciler will retry", len(burst))
        sender.close()

    def stop(self) -> None:
        """Send what is queued, then end."""
        self.queue.put(None)
        self.join(timeout=30)
