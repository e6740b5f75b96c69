"""The broker contract, run against the in-memory stub and a real Redis alike; maintenance on the stub."""

from __future__ import annotations

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
