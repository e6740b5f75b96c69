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
