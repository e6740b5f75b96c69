"""Inputs are declared data under configured roots: no devices, FIFOs or links out, on the job's clock."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from reprotrain.service.app import create_app
from reprotrain.settings import Settings
from reprotrain.store.migrate import upgrade
from tests.helpers import base_spec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    (r / "ok.bin").write_bytes(b"x" * 100)
    return r


def _run(run_job, root: Path, path: str, **spec: object):
    r, _ = run_job(base_spec(inputs={"d": {"path": path}}, **spec), input_roots=[root])
    return r


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: "/dev/zero", "must be a path under an input root"),
        (lambda root: str(root.parent), "must be a path under an input root"),  # the root's parent
        (lambda root: _link(root / "passwd", "/etc/passwd"), "must be a path under an input root"),
        (lambda root: _fifo(root / "pipe"), "not a regular file or directory"),
        (lambda root: _dir_with_fifo(root / "mixed"), "not a regular file"),
    ],
    ids=["device", "outside", "link-out", "fifo", "fifo-in-dir"],
)
def test_refused_inputs_fail_the_job_at_once(run_job, root: Path, make, message: str) -> None:
    """Devices, paths outside the roots, links leading out, FIFOs (in a directory too): FAILED, fast."""
    t0 = time.monotonic()
    r = _run(run_job, root, make(root))
    assert r.status == "FAILED" and r.error.type == "InputError"
    assert message in r.error.message
    assert time.monotonic() - t0 < 10


def test_an_input_under_the_root_is_digested(run_job, root: Path) -> None:
    """A regular file under the root reads as before."""
    r = _run(run_job, root, str(root / "ok.bin"))
    assert r.status == "SUCCEEDED", r.error
    assert r.inputs["d"]["bytes"] == 100


def test_digesting_runs_on_the_jobs_clock(run_job, root: Path) -> None:
    """A huge input and a 1 s timeout: the job fails in about a second, it does not hash for minutes."""
    with open(root / "huge.bin", "wb") as f:
        f.truncate(64 << 30)  # sparse: 64 GiB of zeros that would take a minute to read
    t0 = time.monotonic()
    r = _run(run_job, root, str(root / "huge.bin"), timeout_s=1)
    assert r.status == "FAILED" and "took longer than the job's timeout_s" in r.error.message
    assert time.monotonic() - t0 < 15


def test_the_api_refuses_paths_outside_the_roots_alike(tmp_path: Path, root: Path) -> None:
    """Outside the roots, existing or not, `..` or relative: the same 422, naming only the field."""
    settings = Settings(data_dir=tmp_path, input_roots=[root])  # type: ignore[list-item]
    upgrade(settings.db_url)
    app = create_app(settings, maintenance=False)

    async def submit(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.post("/v1/jobs", json=base_spec(inputs={"d": {"path": path}}))

    try:
        answers = [asyncio.run(submit(p)) for p in ("/etc/shadow", "/nope/x", f"{root}/../x", "rel/x")]
        assert {a.status_code for a in answers} == {422}
        assert len({a.text for a in answers}) == 1
        assert answers[0].json()["error"]["field"] == "inputs.d.path"
        assert asyncio.run(submit(str(root / "ok.bin"))).status_code == 201
    finally:
        app.state.store.close()


def _link(link: Path, target: str) -> str:
    link.symlink_to(target)
    return str(link)


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return str(path)


def _dir_with_fifo(d: Path) -> str:
    d.mkdir()
    (d / "a.txt").write_text("a")
    os.mkfifo(d / "pipe")
    return str(d)
