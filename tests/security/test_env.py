"""A job sees only what it needs: not the worker's settings or credentials, an allowlist and its `env:`."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprotrain.job.launcher import ForkRunner
from tests.helpers import base_spec

SNOOP = """
import json, os, subprocess, sys
child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                       capture_output=True, text=True, check=True).stdout
json.dump({"job": dict(os.environ), "child": json.loads(child)}, open("env.json", "w"))
"""
SECRETS = {
    "REPROTRAIN_DATABASE_URL": "postgresql+psycopg://reprotrain:hunter2@db/reprotrain",
    "REPROTRAIN_BROKER_URL": "redis://:hunter2@redis:6379/0",
    "AWS_SECRET_ACCESS_KEY": "hunter2",
    "HTTPS_PROXY": "http://user:hunter2@proxy:3128",
}


@pytest.fixture
def worker_with_secrets(monkeypatch: pytest.MonkeyPatch):
    """A fork runner started, as a worker's is, from an environment full of settings and credentials."""
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    with ForkRunner() as runner:
        yield runner


def test_a_job_and_its_children_see_no_secret(run_job, worker_with_secrets, tmp_path: Path) -> None:
    """Neither the job nor a process it starts sees the worker's REPROTRAIN_* settings or credentials;
    they see the allowlist (PATH, HOME, LC_*), their own variables, and what the spec's env sets."""
    (tmp_path / "snoop.py").write_text(SNOOP)
    spec = base_spec(command=["python", "snoop.py"], env={"WANDB_MODE": "offline"}, params={})
    spec.pop("entrypoint")
    r, job_dir = run_job(spec, runner=worker_with_secrets, code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    import json

    seen = json.loads((job_dir / "work" / "env.json").read_text())
    for env in (seen["job"], seen["child"]):
        leaked = [k for k, v in env.items() if "hunter2" in v or k in SECRETS]
        assert leaked == []
        assert env["WANDB_MODE"] == "offline" and env["LC_ALL"] == "C.UTF-8" and "PATH" in env
        assert env["PYTHONHASHSEED"] == "0" and env["REPROTRAIN_SEED"] == "1234"


def test_the_spec_env_is_checked_recorded_and_compared(run_job, tmp_path: Path) -> None:
    """`env:` cannot set REPROTRAIN_* names; it is part of the spec, so a changed value is a cause."""
    from reprotrain.compare import compare
    from reprotrain.errors import SpecInvalid
    from reprotrain.spec import parse_spec

    with pytest.raises(SpecInvalid) as e:
        parse_spec(base_spec(env={"REPROTRAIN_DATABASE_URL": "x"}))
    assert e.value.field.startswith("env")
    assert "env" not in parse_spec(base_spec()).canonical()  # no env: the digest it always had
    a, _ = run_job(base_spec(env={"MY_FLAG": "1"}))
    b, _ = run_job(base_spec(env={"MY_FLAG": "2"}))
    causes = {c.key: c.label for c in compare(a, b).causes}
    assert causes["spec.env"] == "environment variable (spec)"
