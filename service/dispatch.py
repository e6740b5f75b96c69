"""Sending job ids to the broker off the request path.

A submit returns once the job row is committed (the durable point: the database, not the broker,
is the source of truth); its id is then handed here and published in a burst with whatever else was
committed meanwhile. If the process dies first, the reconciler re-sends the still-QUEUED job. So
a slow or unreachable broker never stalls a submit.

Two dispatchers with one interface (`submit` is called on the event loop, `aclose` at shutdown):

- `LoopDispatcher`, for a broker that can publish from the event loop (`RedisBroker.asend`). No
  thread: a thread that wakes per burst and competes for the GIL cost more CPU than the publish.
- `Dispatcher`, for any other broker (the embedded filesystem one, AMQP): `Broker.send` from one
  thread, since kombu's publish blocks.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from reprotrain.broker import Broker, RedisBroker
from reprotrain.joblog import batched, job_event
from reprotrain.store import Store

log = logging.getLogger("reprotrain.api")
MAX_BURST = 256
SEND_FAILED = "could not send %d job(s) to the broker; the reconciler will retry"


class Dispatch(Protocol):
    def start(self) -> None: ...
    def submit(self, jobs: list[tuple[str, str]]) -> None: ...
    async def aclose(self) -> None: ...


def make_dispatcher(broker: Broker, store: Store) -> Dispatch:
    return LoopDispatcher(broker, store) if isinstance(broker, RedisBroker) else Dispatcher(broker, store)


def _sent(burst: list[tuple[str, str]]) -> None:
    with batched():
        for job_id, name in burst:
            job_event("sent", job_id, queue=name)


def _unsent(store: Store, burst: list[tuple[str, str]]) -> None:
    """Clear the jobs' sent time after a failed send: the reconciler's next pass sends them."""
    try:
        store.mark_unsent([job_id for job_id, _ in burst])
    except Exception:  # the reconciler still re-sends them, only later (resend_after_s)
        log.exception("could not mark %d job(s) unsent", len(burst))


class LoopDispatcher:
    """Publishes on the event loop that calls `submit`; one publish in flight, the next burst waits."""

    def __init__(self, broker: RedisBroker, store: Store) -> None:
        self.broker, self.store = broker, store
        self._pending: list[tuple[str, str]] = []
        self._task: asyncio.Task[None] | None = None

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
                    await self.broker.asend(burst)
                except Exception:
                    log.exception(SEND_FAILED, len(burst))
                    await run_in_threadpool(_unsent, self.store, burst)
                else:
                    _sent(burst)
        finally:
            self._task = None

    async def aclose(self) -> None:
        """Send what is pending, then close the connection."""
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.broker.aclose()
        self.broker.close()


class Dispatcher(threading.Thread):
    """Publishes from one thread; `submit` may be called from any thread."""

    def __init__(self, broker: Broker, store: Store) -> None:
        super().__init__(name="reprotrain-dispatch", daemon=True)
        self.broker, self.store = broker, store
        self.queue: queue.Queue[list[tuple[str, str]] | None] = queue.Queue()

    def submit(self, jobs: list[tuple[str, str]]) -> None:
        """Hand over (job id, queue) pairs whose rows are committed."""
        if jobs:
            self.queue.put(jobs)

    def run(self) -> None:
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
                self.broker.send(burst)
            except Exception:
                log.exception(SEND_FAILED, len(burst))
                _unsent(self.store, burst)
            else:
                _sent(burst)
        self.broker.close()

    def stop(self) -> None:
        """Send what is queued, then end."""
        self.queue.put(None)
        self.join(timeout=30)

    async def aclose(self) -> None:
        await run_in_threadpool(self.stop)
