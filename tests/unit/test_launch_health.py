"""A worker that cannot launch jobs says so, and its healthcheck fails until a launch works again."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from reprotrain.errors import LaunchError
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.worker import task
from tests.helpers import ROOT, base_spec


def _healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class NoServer:
    """A runner whose fork server will not start (a broken image, a missing library)."""

    def launch(self, req: object) -> None:
        raise LaunchError("fork server did not start: ImportError: libcudart.so.12")


def test_a_failed_launch_makes_the_worker_unhealthy_until_one_works(tmp_path: Path) -> None:
    """The failed launch is recorded; the healthcheck fails naming it; a later launch clears it."""
    settings = Settings(data_dir=tmp_path)
    rt = SimpleNamespace(settings=settings, get_runner=lambda: NoServer())
    with pytest.raises(LaunchError):
        task.run(rt, "j1", parse_spec(base_spec()), tmp_path / "j1", None, threading.Event())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="cannot launch jobs: fork server did not start"):
        _healthcheck().check_launch(settings.jobs)
    task.report_launch(settings, None)
    _healthcheck().check_launch(settings.jobs)  # healthy again
