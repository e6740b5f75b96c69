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
from typing import Any

from celery import Celery

from worker.celery_app import send_job

log = logging.getLogger("reprotrain.api")
_STOP = ("", "")
MAX_BURST = 256


class Dispatcher(threading.Thread):
    def __init__(self, celery: Celery) -> None:
        super().__init__(name="reprotrain-dispatch", daemon=True)
        self.celery = celery
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue()

    def submit(self, job_id: str, job_queue: str) -> None:
        self.queue.put((job_id, job_queue))

    def run(self) -> None:
        self._producer: Any = None
        stopping = False
        while not stopping:
            burst = [self.queue.get()]
            while len(burst) < MAX_BURST and not self.queue.empty():
                burst.append(self.queue.get_nowait())
            stopping = _STOP in burst
            self._send([item for item in burst if item != _STOP])
        if self._producer is not None:
            self._producer.release()

    def _send(self, burst: list[tuple[str, str]]) -> None:
        """Publish a burst through one long-lived producer, pipelined where the transport can."""
        if not burst:
            return
        try:
            if self._producer is None:  # acquiring a producer costs more than a publish
                self._producer = self.celery.producer_pool.acquire(block=True)
            with self._producer.batch():  # Redis: one pipeline; others publish one by one
                for job_id, job_queue in burst:
                    send_job(self.celery, job_id, job_queue, producer=self._producer)
        except Exception:
            log.exception("could not send %d job(s) to the broker; the reconciler will retry", len(burst))
            if self._producer is not None:
                self._producer.release()
                self._producer = None

    def stop(self) -> None:
        """Send what is queued, then end."""
        self.queue.put(_STOP)
        self.join(timeout=30)
