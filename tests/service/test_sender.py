"""The Redis fast path sends exactly what Celery would, and a real worker consumes it in order."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from reprotrain.broker import RedisBroker, create_celery, send_task
from reprotrain.settings import Settings

# fields that are fresh per message (ids) or per process (origin, reply_to)
VARYING = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "origin"),
    ("properties", "correlation_id"),
    ("properties", "reply_to"),
    ("properties", "delivery_tag"),
}


def _shape(message: bytes) -> dict[str, Any]:
    m = json.loads(message)
    m["body"] = json.loads(base64.b64decode(m["body"]))
    for part, key in VARYING:
        assert m[part][key], f"{part}.{key} is empty"
        m[part][key] = "<varies>"
    return m


@pytest.fixture
def celery_on_redis(redis_server: Any, tmp_path: Path) -> Any:
    app = create_celery(Settings(broker_url=redis_server.url(), data_dir=tmp_path))
    yield app
    app.pool.force_close_all()
    app.close()


def test_fast_path_message_equals_celerys_own(celery_on_redis: Any) -> None:
    """Same job, same queue: our LPUSHed message and send_task's differ only in fresh ids."""
    import redis

    r = redis.Redis.from_url(celery_on_redis.conf.broker_url)
    send_task(celery_on_redis, "0123456789abcdef0123456789abcdef", "gpu-a")
    (theirs,) = r.lrange("gpu-a", 0, -1)
    r.delete("gpu-a")
    sender = RedisBroker(celery_on_redis)
    try:
        sender.send([("0123456789abcdef0123456789abcdef", "gpu-a")])
    finally:
        sender.close()
    (ours,) = r.lrange("gpu-a", 0, -1)
    assert _shape(ours) == _shape(theirs)
    mine, celerys = json.loads(ours), json.loads(theirs)
    assert mine["headers"]["id"] == mine["headers"]["root_id"] == mine["properties"]["correlation_id"]
    assert mine["headers"]["id"] != celerys["headers"]["id"]


@pytest.mark.parametrize("queues", [("even", "odd"), ("one",)])
@pytest.mark.parametrize("via", ["send", "asend"])
def test_a_burst_keeps_order_per_queue(celery_on_redis: Any, via: str, queues: tuple[str, ...]) -> None:
    """Jobs sent in one burst, over two queues or one, from a thread (`send`) or an event loop
    (`asend`), come out of each queue first-in, first-out."""
    import asyncio

    import redis

    r = redis.Redis.from_url(celery_on_redis.conf.broker_url)
    jobs = [(f"job{i:02d}", queues[i % len(queues)]) for i in range(10)]
    sender = RedisBroker(celery_on_redis)

    async def on_a_loop() -> None:
        try:
            await sender.asend(jobs)
        finally:
            await sender.aclose()

    try:
        sender.send(jobs) if via == "send" else asyncio.run(on_a_loop())
    finally:
        sender.close()
    for queue in queues:
        popped = []
        while (m := r.rpop(queue)) is not None:  # workers take from the right (BRPOP)
            popped.append(json.loads(base64.b64decode(json.loads(m)["body"]))[0][0])
        assert popped == [j for j, q in jobs if q == queue]
