"""Group commit for submissions: every job pending is inserted in one transaction.

Under concurrent submits, threads that each insert and commit queue on SQLite's single writer
and on the GIL; one writer draining a queue commits a whole burst at once instead. A submit
still answers only after its row is committed, then its id goes to the dispatcher.

Two writers with one interface (`create` awaited on the event loop, `aclose` at shutdown):

- `LoopWriter`, for PostgreSQL: the group commit on the event loop itself, through an async
  psycopg connection; one insert in flight, the next burst gathers meanwhile. No thread: waking
  a writer thread and handing the GIL back and forth cost more CPU than the insert (on a 2-core
  VM a queue round trip between two threads took 92 µs of CPU).
- `JobWriter`, for SQLite (no async driver that is not a thread itself): `Store.create_jobs` in
  one thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool

from reprotrain.errors import SpecInvalid
from reprotrain.joblog import batched, job_event
from reprotrain.service.dispatch import Dispatch
from reprotrain.spec import JobSpec
from reprotrain.store import Store
from reprotrain.store.repo import NewJob, Pending, new_rows, pg_insert_raw

log = logging.getLogger("reprotrain.api")
MAX_BATCH = 256
INSERT_TIMEOUT = 15.0  # s one burst's insert may take before its connection is given up
# a connection whose server went away unannounced is found dead in about 25 s, not hours
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}
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


class Writer(Protocol):
    def start(self) -> None: ...
    async def create(
        self, spec: JobSpec, rerun_of: str | None = None, queue: str | None = None
    ) -> NewJob: ...
    async def aclose(self) -> None: ...


def make_writer(store: Store, dispatch: Dispatch, db_url: str) -> Writer:
    if db_url.startswith("postgresql"):
        return LoopWriter(store, dispatch, db_url)
    return JobWriter(store, dispatch)


def _as_error(e: Exception) -> BaseException:
    """What a submit answers when its own row could not be stored: a value the database refuses
    (one that validation let through) is the spec's problem, 422; anything else stays a 500."""
    if isinstance(e, DataError | psycopg.DataError | RecursionError):
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

    async def aclose(self) -> None:
        """Store what is queued (the event loop runs on: the stored jobs reach the dispatcher)."""
        await run_in_threadpool(self.stop)


class LoopWriter:
    """Inserts on the event loop that awaits `create`, through one autocommit connection of its
    own: a burst is one multi-row INSERT (`pg_insert_raw`), one round trip, as `Store.create_jobs`
    makes it. A connection that broke (a database restart) is opened again and the burst sent once
    more with the same ids, so a commit that did land before the break is not stored twice."""

    def __init__(self, store: Store, dispatch: Dispatch, db_url: str) -> None:
        self.store, self.dispatch = store, dispatch
        self.conninfo = make_conninfo(**(KEEPALIVES | conninfo_to_dict(conninfo(db_url))))  # the URL wins
        self._pending: list[tuple[Pending, asyncio.Future[NewJob]]] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def start(self) -> None:
        pass

    async def create(self, spec: JobSpec, rerun_of: str | None = None, queue: str | None = None) -> NewJob:
        """Store one job (committed when this returns) and hand it to the dispatcher."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[NewJob] = loop.create_future()
        self._pending.append((Pending(spec, rerun_of, queue), fut))
        if self._task is None or self._task.get_loop() is not loop:  # none, or of a loop now gone
            self._task = loop.create_task(self._drain())
        return await fut  # a client that goes away cancels its wait, not the insert

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                outcomes = await self._write([p for p, _ in batch])
                try:
                    _resolve([(fut, o) for (_, fut), o in zip(batch, outcomes, strict=True)], self.dispatch)
                except Exception:  # answered or not, the stored jobs are the reconciler's to send
                    log.exception("handing %d stored job(s) on failed", len(batch))
        finally:
            self._task = None

    async def _write(self, items: list[Pending]) -> list[NewJob | BaseException]:
        try:
            jobs = self.store.new_jobs(items)
            await self._insert(jobs)
            return list(jobs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            # the database is away (503): the whole burst fails alike, at once, with no attempt
            # of its rows one by one under new ids (a commit that landed unseen would be doubled)
            log.warning("storing %d job(s) failed: the database is unavailable: %r", len(items), e)
            return [e] * len(items)
        except Exception as e:
            if len(items) == 1:
                log.exception("storing a job failed")
                return [_as_error(e)]
            # one bad row must not fail its neighbours: each alone, so only it fails (the burst's
            # one statement was refused whole, so none of its ids was stored)
            log.warning("storing %d jobs together failed (%r); storing each alone", len(items), e)
            return [(await self._write([item]))[0] for item in items]

    async def _insert(self, jobs: list[NewJob]) -> None:
        """One statement, sent at most twice: again on a new connection when the first broke or
        did not answer in `INSERT_TIMEOUT` s (either way its commit may have landed unseen, so the
        same ids go again and a unique violation means they are already stored)."""
        sql, params = pg_insert_raw(new_rows(jobs))
        for again in (False, True):
            conn = await self._connection()
            try:
                async with asyncio.timeout(INSERT_TIMEOUT):  # no task of its own, unlike wait_for
                    await conn.execute(sql, params)
                return
            except TimeoutError:
                # a lock held or a network gone: the connection's state is unknown, so it goes
                self._conn = None
                await conn.close()
                if again:
                    raise psycopg.OperationalError(
                        f"the database did not store the jobs within {INSERT_TIMEOUT:g} s, twice"
                    ) from None
            except psycopg.errors.UniqueViolation:
                ids = [j.id for j in jobs]
                if not again or len(await run_in_threadpool(self.store.existing, ids)) != len(ids):
                    raise
                return
            except psycopg.Error:
                if again or not conn.broken:
                    raise
                self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            # a server that does not answer fails the burst (503) in 10 s, not at TCP's pace
            self._conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=10, cursor_factory=psycopg.AsyncRawCursor
            )
        return self._conn

    async def aclose(self) -> None:
        """Store what is pending (30 s at most: what is left is the reconciler's), then close."""
        try:
            if self._task is not None:
                await asyncio.wait_for(asyncio.shield(self._task), 30)
        except Exception:  # TimeoutError among them
            log.exception("the last submits were not all stored at shutdown")
        finally:
            if self._conn is not None:
                await self._conn.close()


def conninfo(db_url: str) -> str:
    """SQLAlchemy's URL (postgresql+psycopg://…) as libpq's connection string, by the dialect's
    own reading of it (as the engine connects): passwords, query options and several hosts alike."""
    url = make_url(db_url)
    args, kwargs = url.get_dialect()().create_connect_args(url)
    kwargs.pop("context", None)  # psycopg's adapters context: not a libpq parameter
    return make_conninfo(*args, **kwargs)
