"""Sending job ids to the broker off the request path.

A submit returns once the job row is committed (the durable point: DESIGN's "the database is the
source of truth"); its id is then handed here and published in a burst with whatever else was
committed meanwhile. If the process dies first, the reconciler re-sends the still-QUEUED job. So
a slow or unreachable broker never stalls a submit.

Two dispatchers with one interface (`submit` is called on the event loop, `aclose` at shutdown):

- `LoopDispatcher`, for a `redis://` broker: publishes from the event loop with redis' asyncio
  client, ready-made Celery messages (worker.celery_app.job_message). No thread: a thread that
  wakes per burst and competes for the GIL cost more CPU than the publish itself.
- `Dispatcher`, for any other broker (the embedded filesystem one, AMQP): Celery's `send_task`
  from one thread, since kombu's publish blocks.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Protocol

from celery import Celery
from starlette.concurrency import run_in_threadpool

from worker.celery_app import JobSender, Messages, redis_broker, redis_options

log = logging.getLogger("reprotrain.api")
MAX_BURST = 256
SEND_FAILED = "could not send %d job(s) to the broker; the reconciler will retry"


class Dispatch(Protocol):
    def start(self) -> None: ...
    def submit(self, jobs: list[tuple[str, str]]) -> None: ...
    async def aclose(self) -> None: ...


def make_dispatcher(celery: Celery) -> Dispatch:
    return LoopDispatcher(celery) if redis_broker(celery) else Dispatcher(celery)


class LoopDispatcher:
    """Publishes on the event loop that calls `submit`; one publish in flight, the next burst waits."""

    def __init__(self, celery: Celery) -> None:
        self.url = redis_broker(celery)
        self.messages = Messages(celery)
        self._pending: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._redis: Any = None

    def start(self) -> None:
        pass

    def submit(self, jobs: list[tuple[str, str]]) -> None:
        self._pending.extend(jobs)
        if self._task is None and self._pending:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                burst, self._pending = self._pending[:MAX_BURST], self._pending[MAX_BURST:]
                try:
                    await self._publish(burst)
                except Exception:
                    log.exception(
                        "could not send %d job(s) to the broker; the reconciler will retry", len(burst)
                    )
        finally:
            self._task = None

    async def _publish(self, burst: list[tuple[str, str]]) -> None:
        if self._redis is None:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(self.url, **redis_options())
        async with self._redis.pipeline(transaction=False) as pipe:
            for q, msgs in self.messages.by_queue(burst).items():
                pipe.lpush(q, *msgs)
            await pipe.execute()

    async def aclose(self) -> None:
        """Send what is pending, then close the connection."""
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), 30)
        if self._redis is not None:
            await self._redis.aclose()


class Dispatcher(threading.Thread):
    """Publishes through Celery from one thread; `submit` may be called from any thread."""

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
                log.exception(SEND_FAILED, len(burst))
        sender.close()

    def stop(self) -> None:
        """Send what is queued, then end."""
        self.queue.put(None)
        self.join(timeout=30)

    async def aclose(self) -> None:
        await run_in_threadpool(self.stop)
