"""Drills 2, 9 and 11: a job outliving the broker's visibility timeout starts once; a job that
tries to kill its worker cannot, and the jobs beside it flow; 200 concurrent submits end as 200
terminal rows, no duplicate, no 5xx."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from reprotrain.status import Status
from tests.helpers import make_database, script_spec, start_stack, wait_for

SLOW = "import time\nprint('started', flush=True)\ntime.sleep(6)\n"
KILLER = """
import os, signal
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
print("still here", flush=True)
"""


@pytest.fixture
def short_visibility(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> Any:
    """A stack whose broker hands an unacked message out again after 2 s, with two workers."""
    db = make_database("sqlite", tmp_path, request)
    stack = start_stack(
        tmp_path, db, redis_server.url(), workers=2, extra_env={"REPROTRAIN_VISIBILITY_TIMEOUT_S": "2"}
    )
    yield stack
    stack.stop()


def _script(c: Any, tmp_path: Path, name: str, text: str) -> dict[str, Any]:
    return script_spec(c, tmp_path / name, text, name)


def test_a_job_longer_than_the_visibility_timeout_starts_once(short_visibility, tmp_path: Path) -> None:
    """6 s of work under a 2 s visibility timeout, a second worker idle: the message comes back
    to the other worker, which cannot claim a job under a live lease; one start, one attempt."""
    c = short_visibility.client()
    job = c.wait(c.submit(_script(c, tmp_path, "slow", SLOW))["id"], timeout=120)
    time.sleep(3)  # a late redelivery has time to arrive, and to be dropped
    job = c.get(job["id"])
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 1, job
    assert b"".join(c.logs(job["id"])).count(b"started") == 1


def test_a_job_cannot_kill_its_worker_and_its_neighbours_flow(short_visibility, tmp_path: Path) -> None:
    """A job signalling its parent, PID 1 and everything (-1) with SIGKILL: it reaches nothing
    outside its namespace; the worker lives, and the next jobs run."""
    c = short_visibility.client()
    killer = c.wait(c.submit(_script(c, tmp_path, "killer", KILLER))["id"], timeout=120)
    if killer.get("isolation", {}).get("mode") == "none":
        pytest.skip("this machine cannot confine jobs")
    assert all(w.poll() is None for w in short_visibility.workers)
    after = [c.submit(_script(c, tmp_path, f"after{i}", "print('ok')\n"))["id"] for i in range(3)]
    assert [c.wait(j, timeout=120)["status"] for j in after] == ["SUCCEEDED"] * 3


def test_200_concurrent_submits_end_as_200_rows(short_visibility) -> None:
    """200 submits at once: 200 × 201, 200 distinct ids, every one ends in a final status, none
    twice (attempts 1), and nothing answered 5xx."""
    spec = json.dumps({"name": "burst", "entrypoint": "reprotrain.examples.noop:train", "seed": 1})
    with httpx.Client(base_url=short_visibility.url, timeout=60) as http, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: http.post("/v1/jobs", content=spec), range(200)))
    assert [a.status_code for a in answers] == [201] * 200
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 200
    c = short_visibility.client()
    final = {s.value for s in Status if s.is_final}

    def ended() -> bool:
        page = c.list(name="burst", limit=500)
        return page["count"] == 200 and all(j["status"] in final for j in page["data"])

    wait_for(ended, 300, "200 jobs to end")
    page = c.list(name="burst", limit=500)["data"]
    assert {j["id"] for j in page} == ids
    assert {j["status"] for j in page} == {"SUCCEEDED"} and {j["attempts"] for j in page} == {1}


def test_a_trainer_killed_by_a_signal_fails_once(short_visibility, tmp_path: Path) -> None:
    """The job's process SIGKILLs itself: FAILED naming the signal within 10 s of starting, and it
    is not delivered again."""
    c = short_visibility.client()
    spec = _script(c, tmp_path, "suicide", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    job = c.wait(c.submit(spec)["id"], timeout=120)
    assert job["status"] == "FAILED" and "killed by signal 9" in job["error"]["message"], job["error"]
    assert job["timing"]["duration_s"] < 10
    time.sleep(3)
    assert c.get(job["id"])["attempts"] == 1


def test_cancel_of_a_running_job_wins_even_when_its_worker_dies(short_visibility, tmp_path: Path) -> None:
    """A running job canceled: CANCELED within 10 s. Another canceled while every worker is killed
    at once: CANCELED when its lease runs out, never run again."""
    c = short_visibility.client()
    spec = _script(c, tmp_path, "long", "import time\nprint('running', flush=True)\ntime.sleep(60)\n")
    first = c.submit(spec)["id"]
    wait_for(lambda: b"running" in b"".join(c.logs(first)), 60, "the job to run")
    t0 = time.monotonic()
    c.cancel(first)
    assert c.wait(first, timeout=30)["status"] == "CANCELED"
    assert time.monotonic() - t0 < 10
    second = c.submit(spec)["id"]
    wait_for(lambda: b"running" in b"".join(c.logs(second)), 60, "the job to run")
    c.cancel(second)
    for w in short_visibility.workers:
        w.kill()
        w.wait(10)
    short_visibility.start_worker()
    done = c.wait(second, timeout=60)
    assert done["status"] == "CANCELED" and done["attempts"] == 1, done
