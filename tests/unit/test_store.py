"""The repository's transitions on SQLite: each change is one conditional UPDATE that can lose."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reprotrain.errors import Conflict, NotFound
from reprotrain.result import Result
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec


def test_only_one_claim_wins(store: Store) -> None:
    """Two workers claim the same job: one wins, the other is told no."""
    job = store.create_job(parse_spec(base_spec()))
    assert store.claim(job.id, "w1", 30) is True
    assert store.claim(job.id, "w2", 30) is False
    assert store.get_job(job.id).lease_owner == "w1"


def test_finish_needs_the_lease(store: Store) -> None:
    """Only the lease owner can finish a job; a second finish changes nothing."""
    job = store.create_job(parse_spec(base_spec()))
    store.claim(job.id, "w1", 30)
    result = Result(
        job_id=job.id,
        name=job.name,
        spec=job.spec,
        spec_digest=job.spec_digest,
        status=Status.SUCCEEDED,
        metrics={"x": 1},
    )
    assert not store.finish(job.id, "w2", Status.SUCCEEDED, result=result, error=None, artifacts=[])
    assert store.finish(
        job.id,
        "w1",
        Status.SUCCEEDED,
        result=result,
        error=None,
        artifacts=[("a.txt", "d" * 64, 1)],
    )
    assert not store.finish(job.id, "w1", Status.FAILED, result=None, error=None, artifacts=[])
    row = store.get_job(job.id)
    assert row.status == "SUCCEEDED" and row.metrics == {"x": 1}
    assert [a.name for a in store.artifacts(job.id)] == ["a.txt"]


def test_expired_lease_is_requeued_then_failed(store: Store) -> None:
    """An expired lease goes back to QUEUED while attempts remain, then FAILED."""
    job = store.create_job(parse_spec(base_spec()))
    store.claim(job.id, "w1", 0.01)
    time.sleep(0.05)
    assert store.reap(max_attempts=2) == [job.id]
    assert store.get_job(job.id).status == "QUEUED"
    assert store.claim(job.id, "w2", 0.01)
    time.sleep(0.05)
    assert store.reap(max_attempts=2) == []
    row = store.get_job(job.id)
    assert row.status == "FAILED" and row.error["type"] == "LeaseExpired"


def test_expired_lease_can_be_claimed_by_another_worker(store: Store) -> None:
    """A RUNNING job whose lease expired may be claimed again; the old owner loses its heartbeat."""
    job = store.create_job(parse_spec(base_spec()))
    store.claim(job.id, "w1", 0.01)
    time.sleep(0.05)
    assert store.claim(job.id, "w2", 30)
    assert store.heartbeat(job.id, "w1", 30) == (False, False)
    assert store.heartbeat(job.id, "w2", 30) == (True, False)


def test_cancel_transitions(store: Store) -> None:
    """Cancel: QUEUED → CANCELED, RUNNING → flagged, final → Conflict, unknown → NotFound."""
    queued = store.create_job(parse_spec(base_spec()))
    assert store.request_cancel(queued.id) == "CANCELED"
    assert not store.claim(queued.id, "w1", 30)
    running = store.create_job(parse_spec(base_spec()))
    store.claim(running.id, "w1", 30)
    assert store.request_cancel(running.id) == "RUNNING"
    assert store.heartbeat(running.id, "w1", 30) == (True, True)
    with pytest.raises(Conflict):
        store.request_cancel(queued.id)
    with pytest.raises(NotFound):
        store.request_cancel("nope")


def test_logs_read_from_any_offset(store: Store) -> None:
    """Shipped log chunks read back from any byte offset."""
    job = store.create_job(parse_spec(base_spec()))
    store.append_log(job.id, "stdout", 0, b"hello ")
    store.append_log(job.id, "stdout", 6, b"world\n")
    assert store.read_log(job.id, "stdout") == b"hello world\n"
    assert store.read_log(job.id, "stdout", 8) == b"rld\n"
    assert store.read_log(job.id, "stderr") == b""


def test_migration_matches_the_tables(tmp_path: Path) -> None:
    """After `upgrade head` the schema equals the SQLAlchemy tables: no autogenerate diff."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from reprotrain.store.repo import make_engine
    from reprotrain.store.tables import Base

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_the_raw_insert_is_the_insert_with_numbered_placeholders() -> None:
    """The PostgreSQL writer's `$n` statement says what `pg_insert`'s `%s` one says, placeholder
    by placeholder, with the same parameters, for any burst size."""
    import re

    from reprotrain.store.repo import Store, new_rows, pg_insert, pg_insert_raw

    for n in (1, 2, 5):
        values = new_rows(Store.new_jobs([(parse_spec(base_spec(name=f"j{i}")), None) for i in range(n)]))
        (sql, params), (raw, raw_params) = pg_insert(values), pg_insert_raw(values)
        assert raw_params == params and len(params) == 13 * n
        numbers = [int(m) for m in re.findall(r"\$(\d+)", raw)]
        assert numbers == list(range(1, len(params) + 1))
        assert re.sub(r"\$\d+", "%s", raw) == sql
