"""The broker, for both edges: the API sends job ids through it, workers consume them.

Delivery settings: late acks, re-delivery when a worker dies, one message at a time, JSON only.
The database, not the broker, says what a job is: the task carries only its id.

Senders share one interface, `Broker` (send a burst, say how deep a queue is, close), as
dramatiq's brokers do:

    RedisBroker   `redis://`: LPUSHes Celery's own message format, built here (a burst is one
                  pipeline); also publishes from an event loop (`asend`)
    CeleryBroker  any other kombu transport (the embedded filesystem one, AMQP): `send_task`
    StubBroker    in memory, for unit tests: what was sent, by queue
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from celery import Celery
from celery.utils.nodenames import anon_nodename

from reprotrain.settings import Settings
from reprotrain.wire import TASK


def broker_options(settings: Settings) -> dict[str, object]:
    if settings.broker.startswith("filesystem"):
        queue = settings.broker_dir / "queue"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"  # kombu's default is ./control in the cwd
        for d in (queue, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(control),
            "store_processed": False,
        }
    # a message not acked within this time is re-delivered; a duplicate cannot claim the job
    return {"visibility_timeout": settings.visibility_timeout_s}


def create_celery(settings: Settings) -> Celery:
    app = Celery("reprotrain", broker=settings.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_default_queue="default",
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def consume(app: Celery, handler: Callable[[str], str]) -> None:
    """Register `handler(job_id) -> outcome` as the task a worker runs for each delivered job id."""
    app.task(name=TASK)(handler)


# Celery's embed part of a protocol-2 body (no callbacks, chains or chords)
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def message_job_id(raw: bytes) -> str | None:
    """The job id a task message on a Redis list carries (ours or Celery's own); None if none."""
    try:
        args = json.loads(base64.b64decode(json.loads(raw)["body"]))[0]
        return str(args[0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def job_message(job_id: str, queue: str, *, origin: str, reply_to: str) -> bytes:
    """The message `send_task(TASK, args=[job_id], queue=queue)` pushes onto a Redis list.

    Celery's task protocol 2 in kombu's Redis envelope: base64 body, a fresh task id and delivery
    tag, exchange "" (the queue is the list's key). tests/service/test_sender.py checks it against
    what Celery itself pushes, so an upgrade that changes the format fails there, not in production.
    """
    return _message_template(origin, reply_to)(job_id, queue)


@functools.cache
def _message_template(origin: str, reply_to: str) -> Callable[[str, str], bytes]:
    """`job_message` for one producer: the envelope serialized once with markers where a message's
    own values go, each message a few substitutions (a sixth of the time of serializing it)."""
    marks = {k: f"\x00{k}\x00" for k in ("task_id", "tag", "body", "queue", "argsrepr")}
    envelope = json.dumps(
        {
            "body": marks["body"],
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": TASK,
                "id": marks["task_id"],
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": marks["task_id"],
                "parent_id": None,
                "argsrepr": marks["argsrepr"],
                "kwargsrepr": "{}",
                "origin": origin,
                "ignore_result": None,
                "replaced_task_nesting": 0,
                "stamped_headers": None,
                "stamps": {},
            },
            "properties": {
                "correlation_id": marks["task_id"],
                "reply_to": reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": marks["queue"]},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": marks["tag"],
            },
        }
    )
    pieces = re.split("(" + "|".join(re.escape(json.dumps(m)[1:-1]) for m in marks.values()) + ")", envelope)
    names = {json.dumps(m)[1:-1]: k for k, m in marks.items()}
    slots = [(names.get(p), p) for p in pieces]
    embed = json.dumps(_EMBED)

    def message(job_id: str, queue: str) -> bytes:
        raw = os.urandom(32)
        values = {
            "task_id": str(uuid.UUID(bytes=raw[:16], version=4)),
            "tag": str(uuid.UUID(bytes=raw[16:], version=4)),
            "body": base64.b64encode(f"[[{json.dumps(job_id)}], {{}}, {embed}]".encode()).decode("ascii"),
            "queue": json.dumps(queue)[1:-1],
            "argsrepr": json.dumps(repr([job_id]))[1:-1],
        }
        return "".join(p if name is None else values[name] for name, p in slots).encode()

    return message


def redis_options() -> dict[str, Any]:
    """Client options for the fast path: bounded waits, a few retries (a retry may duplicate)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), 3),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


class Broker(Protocol):
    """Sends (job id, queue) pairs to workers; one instance per thread."""

    def send(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Send a burst; raises if the broker did not take it (a retry may duplicate)."""

    def queue_depth(self, queue: str) -> int | None:
        """Messages waiting in `queue`, where the broker can tell cheaply; else None."""

    def queued_ids(self, queue: str) -> set[str] | None:
        """The job ids of the messages waiting in `queue`, where the broker can list them; else None."""

    def close(self) -> None: ...


class Messages:
    """Celery messages for job ids, grouped by queue, as this process's producer."""

    def __init__(self, app: Celery) -> None:
        self.origin, self.reply_to = anon_nodename(), app.thread_oid

    def by_queue(self, jobs: Sequence[tuple[str, str]]) -> dict[str, list[bytes]]:
        """LPUSH queue *msgs: the first of msgs is popped first (workers BRPOP), so order holds."""
        out: dict[str, list[bytes]] = {}
        for job_id, queue in jobs:
            out.setdefault(queue, []).append(
                job_message(job_id, queue, origin=self.origin, reply_to=self.reply_to)
            )
        return out


class RedisBroker:
    """A `redis://` broker: a burst is one pipeline of LPUSHes of ready-made Celery messages.

    kombu's per-message publish path (entity binding, declare cache, envelope building) cost a
    third of the API's CPU per submit, against ~15 µs here. tests/service/test_sender.py checks the
    message against what Celery's own `send_task` pushes.
    """

    def __init__(self, app: Celery) -> None:
        import redis

        self.url = str(app.conf.broker_url)
        self.messages = Messages(app)
        self._redis = redis.Redis.from_url(self.url, **redis_options())
        self._aredis: Any = None

    def send(self, jobs: Sequence[tuple[str, str]]) -> None:
        if not jobs:
            return
        pipe = self._redis.pipeline(transaction=False)
        for queue, msgs in self.messages.by_queue(jobs).items():
            pipe.lpush(queue, *msgs)
        pipe.execute()

    async def asend(self, jobs: Sequence[tuple[str, str]]) -> None:
        """`send` from an event loop, with redis' asyncio client (no thread hop)."""
        if self._aredis is None:
            import redis.asyncio

            self._aredis = redis.asyncio.Redis.from_url(self.url, **redis_options())
        async with self._aredis.pipeline(transaction=False) as pipe:
            for queue, msgs in self.messages.by_queue(jobs).items():
                pipe.lpush(queue, *msgs)
            await pipe.execute()

    def queue_depth(self, queue: str) -> int | None:
        return int(self._redis.llen(queue))

    def queued_ids(self, queue: str) -> set[str] | None:
        return {job_id for raw in self._redis.lrange(queue, 0, -1) if (job_id := message_job_id(raw))}

    def close(self) -> None:
        self._redis.close()

    async def aclose(self) -> None:
        if self._aredis is not None:
            await self._aredis.aclose()


class CeleryBroker:
    """Any other kombu transport: `send_task` on one long-lived producer (kombu's publish blocks)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._producer: Any = None

    def send(self, jobs: Sequence[tuple[str, str]]) -> None:
        if not jobs:
            return
        try:
            if self._producer is None:  # acquiring a producer costs more than a publish
                self._producer = self.app.producer_pool.acquire(block=True)
            for job_id, queue in jobs:
                send_task(self.app, job_id, queue, producer=self._producer)
        except Exception:
            self.close()
            raise

    def queue_depth(self, queue: str) -> int | None:
        return None

    def queued_ids(self, queue: str) -> set[str] | None:
        return None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.release()
            self._producer = None


class StubBroker:
    """In memory, for unit tests: `sent[queue]` lists job ids in order; `fail` makes sends raise."""

    def __init__(self) -> None:
        self.sent: dict[str, list[str]] = {}
        self.fail: Exception | None = None
        self.closed = False

    def send(self, jobs: Sequence[tuple[str, str]]) -> None:
        if self.fail is not None:
            raise self.fail
        for job_id, queue in jobs:
            self.sent.setdefault(queue, []).append(job_id)

    def queue_depth(self, queue: str) -> int | None:
        return len(self.sent.get(queue, []))

    def queued_ids(self, queue: str) -> set[str] | None:
        return set(self.sent.get(queue, []))

    def close(self) -> None:
        self.closed = True


def send_task(app: Celery, job_id: str, queue: str, producer: Any = None) -> None:
    """Celery's own publish of one job id (what the fast path's messages are checked against)."""
    app.send_task(TASK, args=[job_id], queue=queue, producer=producer)


def is_redis(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith("redis://")


def open_broker(app: Celery) -> RedisBroker | CeleryBroker:
    """The sender for this app's broker URL."""
    return RedisBroker(app) if is_redis(app) else CeleryBroker(app)
