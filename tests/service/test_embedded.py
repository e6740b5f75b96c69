"""The embedded default: `reprotrain serve` with SQLite and the filesystem broker, no Redis at all."""

from __future__ import annotations

from pathlib import Path

from reprotrain.client import Client
from tests.helpers import base_spec, start_serve


def test_serve_runs_submit_and_rerun_without_any_server(tmp_path: Path) -> None:
    """One command starts API + worker; a job and its re-run succeed; the verdict is identical."""
    serve = start_serve(tmp_path)
    try:
        with Client(serve.url) as c:
            job = c.wait(c.submit(base_spec(name="embedded"))["id"], timeout=120)
            assert job["status"] == "SUCCEEDED", job["error"]
            rerun = c.wait(c.rerun(job["id"])["id"], timeout=120)
            assert rerun["verdict"]["verdict"] == "identical"
        assert (tmp_path / "data" / "reprotrain.db").exists()
        assert (tmp_path / "data" / "broker" / "queue").is_dir()
    finally:
        code = serve.stop()
    # uvicorn shuts down cleanly, then re-raises SIGTERM so process managers see why it stopped
    assert code in (0, -15), serve.output()[-2000:]
    assert "Application shutdown complete" in serve.output()
    assert "No hostname was supplied" not in serve.output()  # kombu's warning at every connection
