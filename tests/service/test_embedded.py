"""The embedded default: `reprotrain serve` with SQLite and the filesystem broker, no Redis at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from reprotrain.client import Client
from tests.conftest import ROOT, base_spec
from tests.service.conftest import free_port, wait_for


def test_serve_runs_submit_and_rerun_without_any_server(tmp_path: Path) -> None:
    """One command starts API + worker; a job and its re-run succeed; the verdict is identical."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reprotrain.cli",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "reprotrain serve")
        with Client(url) as c:
            job = c.wait(c.submit(base_spec(name="embedded"))["id"], timeout=120)
            assert job["status"] == "SUCCEEDED", job["error"]
            rerun = c.wait(c.rerun(job["id"])["id"], timeout=120)
            assert rerun["verdict"]["verdict"] == "identical"
        assert (tmp_path / "data" / "reprotrain.db").exists()
        assert (tmp_path / "data" / "broker" / "queue").is_dir()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    # uvicorn shuts down cleanly, then re-raises SIGTERM so process managers see why it stopped
    assert proc.returncode in (0, -15), (tmp_path / "serve.log").read_text()[-2000:]
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()
