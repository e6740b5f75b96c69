"""Delivery: the database, not the broker, decides. Duplicates drop, lost work comes back."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from reprotrain.spec import parse_spec
from reprotrain.store import Store
from tests.helpers import base_spec, free_port, spawn_redis, start_stack, submit_script, wait_for

SLOW = "import time\nprint('working', flush=True)\ntime.sleep({s})\nopen('done.txt', 'w').write('ok')\n"


@pytest.fixture(scope="module")
def redis_stack(redis_server, tmp_path_factory):
    """A SQLite-backed stack on Redis, for tests that break things on purpose."""
    tmp = tmp_path_factory.mktemp("delivery")
    s = start_stack(tmp, f"sqlite:///{tmp / 'db.sqlite'}", redis_server.url())
    yield s
    s.stop()


def _celery_for(stack):
    from reprotrain.broker import create_celery
    from reprotrain.settings import Settings

    return create_celery(
        Settings(
            broker_url=stack.env["REPROTRAIN_BROKER_URL"], data_dir=Path(stack.env["REPROTRAIN_DATA_DIR"])
        )
    )


def test_duplicate_delivery_runs_the_job_once(redis_stack) -> None:
    """The same job id delivered three times: claimed once, run once, one attempt."""
    from reprotrain.broker import send_task

    c = redis_stack.client()
    job = c.submit(base_spec(name="dup", params={"epochs": 1, "samples": 32}))
    app = _celery_for(redis_stack)
    try:
        for _ in range(2):
            send_task(app, job["id"], "default")
    finally:
        app.pool.force_close_all()
        app.close()
    done = c.wait(job["id"], timeout=120)
    assert done["status"] == "SUCCEEDED" and done["attempts"] == 1
    time.sleep(1.0)  # let the duplicates arrive and be dropped
    assert c.get(job["id"])["attempts"] == 1


def test_reconciler_sends_a_job_the_broker_never_got(redis_stack) -> None:
    """A QUEUED row whose message was lost is re-sent by the API's reconciler and runs."""
    store = Store(redis_stack.env["REPROTRAIN_DATABASE_URL"])
    try:
        # committed but never sent: as if the API died between commit and send, or the broker
        # lost the message; only the reconciler can bring it to a worker
        row = store.create_job(parse_spec(base_spec(name="lost", params={"epochs": 1, "samples": 32})))
    finally:
        store.close()
    done = redis_stack.client().wait(row.id, timeout=120)
    assert done["status"] == "SUCCEEDED"


def test_worker_killed_mid_job_is_requeued_and_finished(redis_stack, tmp_path: Path) -> None:
    """SIGKILL the worker during a job: the lease expires, the job is re-run elsewhere, nothing lost."""
    c = redis_stack.client()
    (tmp_path / "slow.py").write_text(SLOW.format(s=4))
    job = submit_script(c, tmp_path, "crash", "slow.py")
    wait_for(lambda: c.get(job["id"])["status"] == "RUNNING", 60, "job start")
    victim = redis_stack.workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    redis_stack.start_worker()
    done = c.wait(job["id"], timeout=120)
    assert done["status"] == "SUCCEEDED", done["error"]
    assert done["attempts"] == 2
    assert "done.txt" in {a["name"] for a in c.artifacts(job["id"])["data"]}


def test_cancel_of_a_queued_job_is_immediate(redis_stack) -> None:
    """A job cancelled before any worker claims it is CANCELED at once and never runs."""
    store = Store(redis_stack.env["REPROTRAIN_DATABASE_URL"])
    try:
        row = store.create_job(parse_spec(base_spec(name="never", queue="nobody-listens")))
    finally:
        store.close()
    c = redis_stack.client()
    assert c.cancel(row.id)["status"] == "CANCELED"
    assert c.get(row.id)["status"] == "CANCELED"


def test_submits_during_a_broker_outage_run_once_it_is_back(tmp_path: Path) -> None:
    """Redis dies (and comes back empty): submits still answer 201, and their jobs then run."""
    port = free_port()
    redis_proc = spawn_redis(port, tmp_path)
    # no periodic re-send: only the failed sends' own retry can bring these jobs to a worker
    s = start_stack(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        f"redis://127.0.0.1:{port}/0",
        extra_env={"REPROTRAIN_RESEND_AFTER_S": "3600"},
    )
    try:
        c = s.client()
        spec = base_spec(name="outage", params={"epochs": 1, "samples": 32})
        assert c.wait(c.submit(spec)["id"], timeout=120)["status"] == "SUCCEEDED"
        redis_proc.kill()
        redis_proc.wait(10)
        during = [c.submit(spec)["id"] for _ in range(3)]  # stored; their sends fail
        assert httpx.get(f"{s.url}/readyz").json()["checks"]["broker"] != "ok"
        time.sleep(3)  # the failed sends are marked for the reconciler
        redis_proc = spawn_redis(port, tmp_path)  # back, with nothing in it
        for job_id in during:
            done = c.wait(job_id, timeout=120)
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, done
    finally:
        s.stop()
        redis_proc.terminate()
        redis_proc.wait(10)
