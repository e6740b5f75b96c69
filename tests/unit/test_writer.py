"""Group commit of submissions: every caller gets its own committed job; bursts share a commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reprotrain.errors import ReprotrainError
from reprotrain.service.writer import JobWriter
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec


class RecordingDispatch:
    """Stands in for the broker dispatcher: remembers what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def submit(self, jobs: list[tuple[str, str]]) -> None:
        self.sent.extend(jobs)


class CountingStore(Store):
    """A real SQLite store that counts its insert transactions."""

    batches: list[int]

    def create_jobs(self, items):  # type: ignore[no-untyped-def]
        self.batches.append(len(items))
        return super().create_jobs(items)


def test_concurrent_submits_are_each_committed_and_dispatched(tmp_path: Path) -> None:
    """50 concurrent creates: 50 distinct stored jobs, each dispatched once, in fewer transactions."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    store = CountingStore(url)
    store.batches = []
    dispatch = RecordingDispatch()
    writer = JobWriter(store, dispatch)  # type: ignore[arg-type]
    spec = parse_spec(base_spec(queue="gpu"))

    async def burst() -> list[str]:
        rows = await asyncio.gather(*(writer.create(spec) for _ in range(50)))
        return [r.id for r in rows]

    writer.start()
    try:
        ids = asyncio.run(burst())
    finally:
        writer.stop()
    assert len(set(ids)) == 50
    assert sorted(i for i, _ in dispatch.sent) == sorted(ids)
    assert {q for _, q in dispatch.sent} == {"gpu"}
    assert all(store.get_job(i).status == "QUEUED" for i in ids)
    assert sum(store.batches) == 50 and len(store.batches) < 50
    store.close()


def test_a_failed_commit_reaches_every_waiting_caller(tmp_path: Path) -> None:
    """If the insert fails, each caller of that batch gets the error and nothing is dispatched."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"  # never migrated: the table does not exist
    store = Store(url)
    dispatch = RecordingDispatch()
    writer = JobWriter(store, dispatch)  # type: ignore[arg-type]
    writer.start()
    try:
        with pytest.raises(Exception) as e:
            asyncio.run(writer.create(parse_spec(base_spec())))
        assert not isinstance(e.value, ReprotrainError)
        assert dispatch.sent == []
    finally:
        writer.stop()
        store.close()


class PoisonStore(Store):
    """A real SQLite store whose database refuses any row named 'poison', as PostgreSQL refuses a
    value its JSON column cannot hold: the whole transaction fails."""

    def create_jobs(self, items):  # type: ignore[no-untyped-def]
        from sqlalchemy.exc import DataError

        if any(item[0].name == "poison" for item in items):
            raise DataError("INSERT", {}, ValueError("refused by the database"))
        return super().create_jobs(items)


def test_one_bad_row_fails_alone_not_its_burst(tmp_path: Path) -> None:
    """20 refused among 180 good concurrent submits: the 180 are stored and dispatched, each of the
    20 gets a 422-kind error naming the database's refusal."""
    from reprotrain.errors import SpecInvalid

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    store = PoisonStore(url)
    dispatch = RecordingDispatch()
    writer = JobWriter(store, dispatch)  # type: ignore[arg-type]
    good, bad = parse_spec(base_spec(name="good")), parse_spec(base_spec(name="poison"))

    async def burst() -> list[object]:
        specs = [bad if i % 9 == 0 else good for i in range(200)]
        return await asyncio.gather(*(writer.create(s) for s in specs), return_exceptions=True)

    writer.start()
    try:
        outcomes = asyncio.run(burst())
    finally:
        writer.stop()
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(failed) == 23 and all(isinstance(e, SpecInvalid) for e in failed)
    assert len(stored) == 177 and len({s.id for s in stored}) == 177  # type: ignore[attr-defined]
    assert sorted(i for i, _ in dispatch.sent) == sorted(s.id for s in stored)  # type: ignore[attr-defined]
    store.close()
