"""Shared fixtures: a scrubbed environment, one fork server per session, a job factory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT


@pytest.fixture(autouse=True)
def _scrub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REPROTRAIN_* variable from the caller's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("REPROTRAIN_"):
            monkeypatch.delenv(key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A real store on a fresh SQLite database, migrated to the latest schema."""
    from reprotrain.store import Store
    from reprotrain.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    s = Store(url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def fork_runner() -> Iterator[Any]:
    from reprotrain.job.launcher import ForkRunner

    with ForkRunner() as runner:
        yield runner


@pytest.fixture
def run_job(fork_runner: Any, tmp_path: Path) -> Callable[..., Any]:
    """Run a spec dict through the real fork runner; returns (result, job_dir)."""
    from reprotrain.job.supervisor import execute
    from reprotrain.spec import parse_spec

    def run(
        spec: dict[str, Any], *, runner: Any = None, code_dir: Path = ROOT, **kw: Any
    ) -> tuple[Any, Path]:
        job_dir = tmp_path / f"job-{uuid.uuid4().hex[:8]}"
        result = execute(
            runner or fork_runner,
            parse_spec(spec),
            job_dir,
            code_dir=code_dir,
            input_cache=tmp_path / "digest-cache.sqlite",
            **kw,
        )
        return result, job_dir

    return run
