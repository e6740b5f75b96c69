"""The broker contract, run against the in-memory stub and a real Redis alike; maintenance on the stub."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reprotrain.broker import RedisBroker, StubBroker, create_celery
from reprotrain.service.dispatch import Dispatcher
from reprotrain.service.maintenance import maintain_once
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from tests.helpers import base_spec, sent_long_ago


@pytest.fixture(params=["stub", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Each broker that can tell a queue's depth: the stub, and Redis through the fast path."""
    if request.param == "stub":
        yield StubBroker()
        return
    url = request.getfixturevalue("redis_server").url()
    b = RedisBroker(create_celery(Settings(broker_url=url, data_dir=tmp_path)))
    yield b
    b.close()


def test_a_burst_lands_in_its_queues(broker: Any) -> None:
    """Five jobs over two queues: each queue then holds exactly its own jobs' messages."""
    broker.send([(f"job{i}", "even" if i % 2 == 0 else "odd") for i in range(5)])
    assert (broker.queue_depth("even"), broker.queue_depth("odd"), broker.queue_depth("none")) == (3, 2, 0)


def test_an_empty_burst_sends_nothing(broker: Any) -> None:
    """Sending no jobs leaves every queue as it was."""
    broker.send([])
    assert broker.queue_depth("default") == 0


def test_maintenance_resends_a_lost_job_once(store: Store, tmp_path: Path) -> None:
    """A job sent an hour ago and still QUEUED, its queue empty: re-sent once, not on the next pass."""
    settings = Settings(data_dir=tmp_path, resend_after_s=60)
    job = store.create_job(parse_spec(base_spec()))
    sent_long_ago(store, job.id)
    stub = StubBroker()
    assert maintain_once(store, stub, settings)["resent"] == [job.id]
    assert maintain_once(store, stub, settings)["resent"] == []
    assert stub.sent == {"default": [job.id]}


def test_a_failed_send_clears_sent_at_for_the_reconciler(store: Store) -> None:
    """The dispatcher thread's send raises: the job is marked unsent, so the next pass sends it."""
    job = store.create_job(parse_spec(base_spec()))
    stub = StubBroker()
    stub.fail = ConnectionError("broker down")
    dispatcher = Dispatcher(stub, store)
    dispatcher.start()
    dispatcher.submit([(job.id, job.queue)])
    dispatcher.stop()
    assert store.get_job(job.id).sent_at is None
    assert stub.closed


def test_a_backlog_on_one_queue_never_hides_a_lost_job_on_another(store: Store, tmp_path: Path) -> None:
    """520 jobs wait on a queue no worker consumes (its messages still there); a job on another queue
    lost its message: the next pass re-sends that one, and none of the backlog."""
    from sqlalchemy import update

    from reprotrain.store.repo import now
    from reprotrain.store.tables import JobRow

    settings = Settings(data_dir=tmp_path, resend_after_s=10)
    spec = parse_spec(base_spec(queue="nobody-consumes"))
    backlog = [j.id for j in store.create_jobs([(spec, None)] * 520)]
    lost = store.create_job(parse_spec(base_spec(queue="default")))
    with store.session() as s:  # all sent a minute ago, the backlog first
        s.execute(update(JobRow).values(sent_at=now() - timedelta(seconds=60)))
        s.execute(update(JobRow).where(JobRow.id == lost.id).values(created_at=now() + timedelta(seconds=1)))
    stub = StubBroker()
    stub.send([(j, "nobody-consumes") for j in backlog])  # their messages are still in the queue
    assert maintain_once(store, stub, settings)["resent"] == [lost.id]
    assert stub.sent["default"] == [lost.id] and len(stub.sent["nobody-consumes"]) == 520


def test_a_cancel_wins_over_a_lost_lease(store: Store) -> None:
    """A running job asked to cancel whose worker died: the reaper ends it CANCELED, it is never
    queued again (claim would refuse it forever)."""
    job = store.create_job(parse_spec(base_spec()))
    assert store.claim(job.id, "w1", lease_s=0.01)
    assert store.request_cancel(job.id) == "RUNNING"
    time.sleep(0.05)  # the lease runs out: the worker is gone
    assert store.reap(max_attempts=3) == []
    row = store.get_job(job.id)
    assert row.status == "CANCELED" and row.error["type"] == "Canceled"
    assert not store.claim(job.id, "w2", lease_s=30)
