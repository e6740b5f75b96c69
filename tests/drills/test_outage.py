"""Drill 8: the database goes away for several seconds while a job runs and finishes. The API
answers 503 store_unavailable (with Retry-After) instead of 500, the finished job is stored once
the database is back, run once, with its artifacts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.helpers import base_spec, make_database, script_spec, start_stack, wait_for

SLOW = """
import os, time
os.makedirs("out", exist_ok=True)
print("started", flush=True)
time.sleep(4)
open("out/done.txt", "w").write("finished")
print("finished", flush=True)
"""


def _allow(admin: Any, db: str, allow: bool) -> None:
    with admin.connect() as c:
        c.execute(text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {str(allow).lower()}'))
        if not allow:
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"), {"d": db}
            )


@pytest.fixture
def pg_stack(request: pytest.FixtureRequest, redis_server: Any, tmp_path: Path) -> Any:
    url = make_database("postgres", tmp_path, request)
    stack = start_stack(tmp_path, url, redis_server.url())
    yield stack, url.rsplit("/", 1)[1]
    stack.stop()


def test_a_database_outage_is_503_and_runs_nothing_twice(pg_stack, postgres_admin, tmp_path: Path) -> None:
    """Outage of ~8 s while a 4 s job finishes: every request meanwhile, a read or a submit, is 503
    with Retry-After, the job ends SUCCEEDED with attempts == 1 and its artifact, once the database
    is back."""
    stack, db = pg_stack
    c = stack.client()
    job = c.submit(script_spec(c, tmp_path / "code", SLOW, "outage"))
    wait_for(lambda: c.get(job["id"])["status"] == "RUNNING", 60, "the job to start")
    _allow(postgres_admin, db, False)
    try:
        seen = set()
        with httpx.Client(base_url=stack.url, timeout=10) as http:
            end = time.monotonic() + 8
            while time.monotonic() < end:  # the same keep-alive connection all along
                r = http.get(f"/v1/jobs/{job['id']}")
                seen.add((r.status_code, r.json()["error"]["code"], r.headers.get("retry-after")))
                # a submit reaches the writer (no bundle to look up first): its insert fails alike
                r = http.post("/v1/jobs", json=base_spec(name="during"))
                seen.add((r.status_code, r.json()["error"]["code"], r.headers.get("retry-after")))
                time.sleep(0.5)
        assert seen == {(503, "store_unavailable", "5")}, seen
        assert httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 503
    finally:
        _allow(postgres_admin, db, True)
    done = c.wait(job["id"], timeout=120)
    assert done["status"] == "SUCCEEDED", done["error"]
    assert done["attempts"] == 1
    assert any(a["name"].endswith("out/done.txt") for a in c.artifacts(job["id"])["data"])
    assert b"".join(c.logs(job["id"])).count(b"started") == 1


def test_a_run_finished_before_its_worker_died_is_stored_not_run_again(
    pg_stack, postgres_admin, tmp_path: Path
) -> None:
    """The job finishes while the database is away, its worker is killed before it could store it;
    a new worker, handed the job again, stores the finished run from the record its predecessor
    kept: SUCCEEDED, attempts 2, the script started once."""
    stack, db = pg_stack
    c = stack.client()
    job = c.submit(script_spec(c, tmp_path / "code", SLOW, "orphaned"))
    wait_for(lambda: b"started" in b"".join(c.logs(job["id"])), 60, "the job to start")
    record = Path(stack.env["REPROTRAIN_DATA_DIR"]) / "jobs" / job["id"] / "attempt-1.result.json"
    _allow(postgres_admin, db, False)
    try:
        wait_for(record.exists, 60, "the run to finish")
        stack.workers[0].kill()
        stack.workers[0].wait(30)
    finally:
        _allow(postgres_admin, db, True)
    stack.start_worker()
    done = c.wait(job["id"], timeout=120)
    assert done["status"] == "SUCCEEDED", done["error"]
    assert done["attempts"] == 2
    assert b"".join(c.logs(job["id"])).count(b"started") == 1
    assert any(a["name"].endswith("out/done.txt") for a in c.artifacts(job["id"])["data"])
    assert not record.parent.exists()  # stored: its directories are gone
