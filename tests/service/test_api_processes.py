"""`reprotrain api --workers N`: several API processes on one port, each with its own group
commit, on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, base_spec, free_port, make_database, start_stack, wait_for


def _started(logs: Path) -> int:
    return (logs / "api.log").read_text().count("Started server process")


def test_several_api_processes_store_and_run_every_submit(
    request: pytest.FixtureRequest, redis_server, tmp_path: Path
) -> None:
    """Two API processes serve one port: 60 concurrent submits are all answered 201 with
    distinct ids, all stored and all sent; a job submitted through them runs to SUCCEEDED."""
    db = make_database("postgres", tmp_path, request)
    stack = start_stack(tmp_path, db, redis_server.url(), api_args=("--workers", "2"))
    try:
        wait_for(lambda: _started(stack.logs) == 2, 30, "two API processes")
        spec = base_spec(entrypoint="reprotrain.examples.noop:train", queue="elsewhere")

        def submit(_: int) -> httpx.Response:
            return httpx.post(f"{stack.url}/v1/jobs", json=spec, timeout=30)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(60)))
        assert [r.status_code for r in answers] == [201] * 60
        ids = {r.json()["id"] for r in answers}
        assert len(ids) == 60
        listed = httpx.get(f"{stack.url}/v1/jobs", params={"limit": 1, "queue": "elsewhere"}).json()
        assert listed["count"] == 60
        job = httpx.post(f"{stack.url}/v1/jobs", json=base_spec(), timeout=30).json()

        def done() -> bool:
            return httpx.get(f"{stack.url}/v1/jobs/{job['id']}").json()["status"] == "SUCCEEDED"

        wait_for(done, 120, "the job to succeed")
    finally:
        stack.stop()


def test_several_api_processes_need_postgresql(tmp_path: Path) -> None:
    """On SQLite (one writer at a time) --workers 2 is refused with the reason, before serving."""
    env = {
        "PATH": "/usr/bin:/bin",
        "REPROTRAIN_DATA_DIR": str(tmp_path / "data"),
        "REPROTRAIN_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "REPROTRAIN_PORT": str(free_port()),
    }
    out = subprocess.run(
        [sys.executable, "-m", "reprotrain.cli", "api", "--workers", "2"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "needs PostgreSQL" in out.stderr
    assert "Traceback" not in out.stderr
