"""Group commit for submissions: one thread inserts every pending job in one transaction.

Under concurrent submits, threads that each insert and commit queue on SQLite's single writer
and on the GIL; one writer thread draining a queue commits a whole burst at once instead. A
submit still answers only after its row is committed, then its id goes to the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from sqlalchemy.exc import DataError

from reprotrain.errors import SpecInvalid
from reprotrain.joblog import batched, job_event
from reprotrain.service.dispatch import Dispatch
from reprotrain.spec import JobSpec
from reprotrain.store import Store
from reprotrain.store.repo import NewJob, Pending

log = logging.getLogger("reprotrain.api")
MAX_BATCH = 256
_STOP: Any = None


def _resolve(done: list[tuple[asyncio.Future[NewJob], NewJob | BaseException]], dispatch: Dispatch) -> None:
    """On the event loop: answer the waiting submits, then hand the stored jobs to the dispatcher."""
    for fut, outcome in done:
        if fut.done():  # the client went away; its job is stored and is sent all the same
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)
    stored = [o for _, o in done if not isinstance(o, BaseException)]
    with batched():  # committed: logged before it can be sent
        for job in stored:
            job_event("submitted", job.id, name=job.name, queue=job.queue, rerun_of=job.rerun_of)
    dispatch.submit([(o.id, o.queue) for o in stored])


def _as_error(e: Exception) -> BaseException:
    """What a submit answers when its own row could not be stored: a value the database refuses
    (one that validation let through) is the spec's problem, 422; anything else stays a 500."""
    if isinstance(e, DataError | RecursionError):
        return SpecInvalid(f"the spec holds a value the database cannot store: {type(e).__name__}")
    return e


class JobWriter(threading.Thread):
    def __init__(self, store: Store, dispatch: Dispatch) -> None:
        super().__init__(name="reprotrain-writer", daemon=True)
        self.store, self.dispatch = store, dispatch
        self.queue: queue.Queue[Any] = queue.Queue()

    async def create(self, spec: JobSpec, rerun_of: str | None = None, queue: str | None = None) -> NewJob:
        """Store one job (committed when this returns) and hand it to the dispatcher. `queue`: where
        it is sent, when not the spec's (a re-run routed to its original's environment)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[NewJob] = loop.create_future()
        self.queue.put((Pending(spec, rerun_of, queue), loop, fut))
        return await fut

    def run(self) -> None:
        while (first := self.queue.get()) is not _STOP:
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self.queue.put(_STOP)
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[Any]) -> None:
        outcomes: list[Any]
        try:
            outcomes = self.store.create_jobs([p for p, _, _ in batch])
        except Exception as e:
            if len(batch) == 1:
                log.exception("storing a job failed")
                outcomes = [_as_error(e)]
            else:  # one bad row must not fail its neighbours: each alone, so only it fails
                log.warning("storing %d jobs together failed (%r); storing each alone", len(batch), e)
                outcomes = [self._alone(p) for p, _, _ in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, loop, fut), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((fut, outcome))
        for loop, done in by_loop.items():  # one wake-up of each event loop per batch
            try:
                loop.call_soon_threadsafe(_resolve, done, self.dispatch)
            except RuntimeError:  # that loop is closed: nobody waits; the reconciler sends the jobs
                log.warning("event loop closed; %d stored job(s) left to the reconciler", len(done))
                stored = [o.id for _, o in done if not isinstance(o, BaseException)]
                try:
                    self.store.mark_unsent(stored)
                except Exception:  # the periodic re-send still covers them, later
                    log.exception("could not mark %d job(s) unsent", len(stored))

    def _alone(self, pending: Pending) -> NewJob | BaseException:
        try:
            return self.store.create_jobs([pending])[0]
        except Exception as e:
            log.exception("storing a job failed")
            return _as_error(e)

    def stop(self) -> None:
        self.queue.put(_STOP)
        self.join(timeout=30)
