"""Recovery against real servers: lost messages come back, no backlog duplicates, dropped DB connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

from reprotrain.broker import RedisBroker, create_celery
from reprotrain.service.dispatch import LoopDispatcher
from reprotrain.service.maintenance import maintain_once
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec, free_port, make_database, sent_long_ago


def test_a_job_whose_message_waits_is_left_and_a_lost_one_resent(
    store: Store, redis_server: Any, tmp_path: Path
) -> None:
    """Two jobs sent an hour ago: one's message still waits in the queue (behind a backlog: left
    alone), the other's is gone (re-sent, once); once the first's is gone too, it is re-sent, and
    the other, re-sent a moment ago, is not re-sent before resend_after_s."""
    settings = Settings(broker_url=redis_server.url(), data_dir=tmp_path, resend_after_s=60)
    r = redis.Redis.from_url(settings.broker)
    waiting, lost = (store.create_job(parse_spec(base_spec(queue="busy"))) for _ in range(2))
    for job in (waiting, lost):
        sent_long_ago(store, job.id)
    sender = RedisBroker(create_celery(settings))
    try:
        sender.send([(waiting.id, "busy")])
        r.lpush("busy", b"a message of another kind")  # not ours: not read as a job's
        assert maintain_once(store, sender, settings)["resent"] == [lost.id]
        assert r.llen("busy") == 3
        assert maintain_once(store, sender, settings)["resent"] == []  # both now wait in the queue
        r.delete("busy")  # the broker lost both
        # the first's message is gone now: re-sent; the other was re-sent a moment ago: not yet again
        assert maintain_once(store, sender, settings)["resent"] == [waiting.id]
    finally:
        sender.close()


def test_a_failed_send_leaves_the_job_to_the_reconciler(store: Store, tmp_path: Path) -> None:
    """Broker unreachable: the dispatcher clears sent_at, so the next reconciler pass sends it."""
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=tmp_path)
    job = store.create_job(parse_spec(base_spec()))
    assert store.get_job(job.id).sent_at is not None
    dispatcher = LoopDispatcher(RedisBroker(create_celery(settings)), store)

    async def send() -> None:
        dispatcher.submit([(job.id, job.queue)])
        await dispatcher.aclose()

    asyncio.run(send())
    assert store.get_job(job.id).sent_at is None
    assert job.id in store.stale_queued(older_than_s=3600, grace_s=0)


def test_submits_survive_a_dropped_database_connection(request: Any, tmp_path: Path) -> None:
    """PostgreSQL drops every connection (as on a restart): the next group commit still lands, once."""
    from sqlalchemy import text

    url = make_database("postgres", tmp_path, request)
    upgrade(url)
    store = Store(url)
    try:
        first = store.create_job(parse_spec(base_spec()))  # the insert pool now holds a connection
        admin = request.getfixturevalue("postgres_admin")
        dbname = url.rsplit("/", 1)[1]
        with admin.connect() as c:
            killed = c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": dbname},
            ).all()
        assert killed, "no connection to drop"
        jobs = store.create_jobs([(parse_spec(base_spec(name=f"after-{i}")), None) for i in range(3)])
        assert store.existing([first.id] + [j.id for j in jobs]) == {first.id} | {j.id for j in jobs}
        assert store.list_jobs(limit=10)[1] == 4
    finally:
        store.close()
