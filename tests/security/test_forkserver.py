"""The fork server survives its jobs: a confined job cannot reach it; an unconfined job that kills it
fails with that cause, and the next job runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprotrain.job.launcher import ForkRunner
from tests.helpers import base_spec


def _killer(tmp_path: Path, code: str) -> dict:
    (tmp_path / "kill.py").write_text(code)
    spec = base_spec(command=["python", "kill.py"], params={})
    spec.pop("entrypoint")
    return spec


def test_a_confined_job_cannot_signal_its_fork_server(run_job, tmp_path: Path) -> None:
    """Outside its PID namespace nothing has a pid it can name (its parent's is 0, so `kill(ppid)`
    signals its own group), and `kill(-1)` finds nobody: the server lives on and never restarts."""
    spec = _killer(tmp_path, "import os, time\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)\ntime.sleep(30)\n")
    with ForkRunner() as runner:
        if runner.isolation.mode == "none":
            pytest.skip(f"this machine cannot confine jobs: {runner.isolation.note}")
        killer, _ = run_job(spec, runner=runner, code_dir=tmp_path)
        assert killer.status == "FAILED", killer.error  # it may kill itself: its own group is all it reaches
        assert runner.alive and runner.restarts == 0
        after, _ = run_job(base_spec(), runner=runner)
        assert after.status == "SUCCEEDED", after.error


def test_a_job_that_kills_its_fork_server_fails_and_the_next_one_runs(run_job, tmp_path: Path) -> None:
    """Unconfined, `os.kill(os.getppid(), 9)`: that job is FAILED as ForkServerDied; the server is
    started again."""
    spec = _killer(tmp_path, "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(30)\n")
    with ForkRunner(isolation="none") as runner:
        killer, _ = run_job(spec, runner=runner, code_dir=tmp_path)
        assert killer.status == "FAILED"
        assert killer.error.type == "ForkServerDied" and "fork server died" in killer.error.message
        after, _ = run_job(base_spec(), runner=runner)
        assert after.status == "SUCCEEDED", after.error
        assert runner.restarts == 1 and runner.alive
