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

from worker.celery_app import send_job

log = logging.getLogger("reprotrain.api")
_STOP = ("", "")


class Dispatcher(threading.Thread):
    def __init__(self, celery: Celery) -> None:
        super().__init__(name="reprotrain-dispatch", daemon=True)
        self.celery = celery
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue()

    def submit(self, job_id: str, job_queue: str) -> None:
        self.queue.put((job_id, job_queue))

    def run(self) -> None:
        producer = None
        while (item := self.queue.get()) != _STOP:
            try:
                if producer is None:  # one producer for the thread's life: acquiring costs more than sending
                    producer = self.celery.producer_pool.acquire(block=True)
                send_job(self.celery, *item, producer=producer)
            except Exception:
                log.exception("could not send job %s to the broker; the reconciler will retry", item[0])
                if producer is not None:
                    producer.release()
                    producer = None
        if producer is not None:
            producer.release()

    def stop(self) -> None:
        """Send what is queued, then end."""
        self.queue.put(_STOP)
        self.join(timeout=30)
