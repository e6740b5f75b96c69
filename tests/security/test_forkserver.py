"""The fork server survives its jobs: a job that kills it fails with that cause, and the next job runs."""

from __future__ import annotations

from pathlib import Path

from reprotrain.job.launcher import ForkRunner
from tests.helpers import base_spec


def test_a_job_that_kills_its_fork_server_fails_and_the_next_one_runs(run_job, tmp_path: Path) -> None:
    """`os.kill(os.getppid(), 9)`: that job is FAILED as ForkServerDied; the server is started again."""
    (tmp_path / "kill.py").write_text("import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(30)\n")
    spec = base_spec(command=["python", "kill.py"], params={})
    spec.pop("entrypoint")
    with ForkRunner() as runner:
        killer, _ = run_job(spec, runner=runner, code_dir=tmp_path)
        assert killer.status == "FAILED"
        assert killer.error.type == "ForkServerDied" and "fork server died" in killer.error.message
        after, _ = run_job(base_spec(), runner=runner)
        assert after.status == "SUCCEEDED", after.error
        assert runner.restarts == 1 and runner.alive
