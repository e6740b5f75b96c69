"""Drills 6 and 7: the broker loses its messages (FLUSHALL) or dies (kill -9, restarted from its
append-only file). Every QUEUED job is re-sent once, a backlog on another queue included, nothing
runs twice, and consumption resumes."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.helpers import base_spec, free_port, make_database, script_spec, start_stack, wait_for

BUSY = "import time\nprint('busy', flush=True)\ntime.sleep(4)\n"


def _busy_job(c: Any, tmp_path: Path) -> str:
    job = c.submit(script_spec(c, tmp_path / "busy", BUSY, "busy"))
    wait_for(lambda: c.get(job["id"])["status"] == "RUNNING", 60, "the busy job to start")
    return job["id"]


def test_lost_messages_are_resent_once_behind_a_backlog(stack, tmp_path: Path) -> None:
    """500 jobs wait on a queue no worker consumes and 3 wait behind a running job; the broker
    loses every message: the 3 run (once each), and the 500 are re-sent exactly once."""
    c = stack.client()
    broker = redis.Redis.from_url(stack.env["REPROTRAIN_BROKER_URL"])
    backlog_spec = json.dumps(base_spec(name="backlog", queue="unconsumed"))
    with httpx.Client(base_url=stack.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: http.post("/v1/jobs", content=backlog_spec).status_code, range(500)))
    assert codes == [201] * 500
    busy = _busy_job(c, tmp_path)
    waiting = [c.submit(base_spec(name="behind", params={"epochs": 1, "samples": 8}))["id"] for _ in range(3)]
    wait_for(lambda: broker.llen("unconsumed") == 500 and broker.llen("default") == 3, 30, "the messages")
    broker.flushdb()  # every message gone: the database alone knows what is QUEUED
    for job_id in waiting:
        done = c.wait(job_id, timeout=120)
        assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, done
    assert c.get(busy)["attempts"] == 1
    wait_for(lambda: broker.llen("unconsumed") == 500, 60, "the backlog to be re-sent")
    import time

    time.sleep(5)  # several reconciler passes (every 0.5 s) with the backlog still waiting
    assert broker.llen("unconsumed") == 500, "a waiting backlog was re-sent again"


@pytest.fixture
def aof_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A stack on a redis-server of its own with its append-only file on, restartable in place."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--dir", str(tmp_path)]  # fmt: skip
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    wait_for(lambda: redis.Redis(port=port).ping(), 10, "redis-server")
    stack = start_stack(tmp_path, make_database("sqlite", tmp_path, request), f"redis://127.0.0.1:{port}/0")

    def restart() -> None:
        procs[-1].kill()
        procs[-1].wait(10)
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: redis.Redis(port=port).ping(), 30, "redis-server to come back")

    yield stack, restart
    stack.stop()
    procs[-1].kill()
    procs[-1].wait(10)


def test_a_broker_killed_and_restarted_loses_nothing(aof_stack, tmp_path: Path) -> None:
    """kill -9 of Redis with one job running and one queued, then a restart from its AOF: both end
    SUCCEEDED, each run once, and a job submitted afterwards runs within 30 s."""
    stack, restart = aof_stack
    c = stack.client()
    running = _busy_job(c, tmp_path)
    queued = c.submit(base_spec(name="queued", params={"epochs": 1, "samples": 8}))["id"]
    restart()
    for job_id in (running, queued):
        done = c.wait(job_id, timeout=120)
        assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, done
    after = c.wait(c.submit(base_spec(name="after", params={"epochs": 1, "samples": 8}))["id"], timeout=30)
    assert after["status"] == "SUCCEEDED", after["error"]
