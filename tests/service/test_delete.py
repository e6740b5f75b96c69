"""Deleting jobs and retention: a job's row, logs and the stored files no other job holds go; a job
still running or the original of a re-run stays; the retention sweep deletes old jobs re-runs first,
keeps an original whose re-run is kept, and sweeps files no job holds once past their grace."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from reprotrain.artifacts import ArtifactStore
from reprotrain.errors import Conflict
from reprotrain.result import Result
from reprotrain.service.maintenance import retain
from reprotrain.settings import Settings
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.store.migrate import upgrade
from reprotrain.store.tables import JobRow
from tests.helpers import base_spec
from tests.service.test_ui_api import Browser, make_app


class World:
    def __init__(self, app: Any, tmp: Path) -> None:
        self.app, self.store, self.tmp = app, app.state.store, tmp
        self.artifacts: ArtifactStore = app.state.artifacts
        self.settings: Settings = app.state.settings

    def stored(self, content: bytes) -> str:
        from reprotrain.hashing import digest_bytes

        src = self.tmp / f"src-{time.monotonic_ns()}"
        src.write_bytes(content)
        digest = digest_bytes(content).removeprefix("blake3:")
        self.artifacts.put(src, digest)
        return digest

    def finished(self, files: dict[str, bytes], rerun_of: str | None = None, age_days: float = 0) -> str:
        job = self.store.create_jobs([(parse_spec(base_spec()), rerun_of)])[0]
        self.store.claim(job.id, "w", 30)
        self.store.append_log(job.id, "stdout", 0, b"hello\n")
        result = Result(
            job_id=job.id, name=job.name, spec=job.spec, spec_digest=job.spec_digest, status=Status.SUCCEEDED
        )
        arts = [(name, self.stored(data), len(data)) for name, data in files.items()]
        assert self.store.finish(job.id, "w", Status.SUCCEEDED, result=result, error=None, artifacts=arts)
        if age_days:
            with self.store.session() as s:
                when = datetime.now(UTC) - timedelta(days=age_days)
                s.execute(update(JobRow).where(JobRow.id == job.id).values(finished_at=when))
        return job.id

    def age_files(self, seconds: float) -> None:
        t = time.time() - seconds
        for p in self.artifacts.root.rglob("*"):
            if p.is_file():
                os.utime(p, (t, t))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    app = make_app(tmp_path, artifact_grace_s=60)
    yield World(app, tmp_path)
    app.state.store.close()


def test_delete_takes_the_job_its_logs_and_only_the_files_no_one_else_holds(world: World) -> None:
    a = world.finished({"model.pt": b"shared weights", "a.txt": b"only a"})
    b = world.finished({"model.pt": b"shared weights"})
    world.age_files(3600)
    client = Browser(world.app)
    r = client.call("DELETE", f"/v1/jobs/{a[:8]}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": a, "artifacts_removed": 1, "bytes_freed": len(b"only a"), "artifacts_kept": 0}
    assert client.call("GET", f"/v1/jobs/{a}").status_code == 404
    assert world.store.read_log(a, "stdout") == b""
    assert client.call("GET", f"/v1/jobs/{b}/artifacts/model.pt").content == b"shared weights"
    r = client.call("DELETE", f"/v1/jobs/{a}")
    assert r.status_code == 404


def test_a_file_reused_within_its_grace_is_kept_for_the_sweep(world: World) -> None:
    a = world.finished({"x.bin": b"fresh"})  # stored just now: a worker may be recording it again
    assert Browser(world.app).call("DELETE", f"/v1/jobs/{a}").json()["artifacts_kept"] == 1
    assert any(world.artifacts.root.rglob("*"))
    world.age_files(120)
    assert retain(world.store, world.artifacts, world.settings)["files"] == 1
    assert not [p for p in world.artifacts.root.rglob("*") if p.is_file()]


def test_queued_running_and_originals_are_refused(world: World) -> None:
    client = Browser(world.app)
    queued = world.store.create_jobs([(parse_spec(base_spec()), None)])[0].id
    r = client.call("DELETE", f"/v1/jobs/{queued}")
    assert r.status_code == 409 and "is QUEUED: cancel it, then delete it" in r.json()["error"]["message"]
    world.store.claim(queued, "w", 30)
    assert client.call("DELETE", f"/v1/jobs/{queued}").status_code == 409
    original = world.finished({})
    rerun = world.finished({}, rerun_of=original)
    r = client.call("DELETE", f"/v1/jobs/{original}")
    assert r.status_code == 409 and rerun in r.json()["error"]["message"]
    assert client.call("DELETE", f"/v1/jobs/{rerun}").status_code == 200
    assert client.call("DELETE", f"/v1/jobs/{original}").status_code == 200


def test_retention_deletes_old_jobs_reruns_first_and_keeps_originals_of_kept_reruns(tmp_path: Path) -> None:
    app = make_app(tmp_path, retention_days=30, artifact_grace_s=0)
    w = World(app, tmp_path)
    old = w.finished({"o.txt": b"old"}, age_days=40)
    old_rerun = w.finished({"o.txt": b"old"}, rerun_of=old, age_days=35)
    kept_original = w.finished({"k.txt": b"kept original"}, age_days=50)
    w.finished({}, rerun_of=kept_original, age_days=1)  # recent: keeps its original
    recent = w.finished({"r.txt": b"recent"}, age_days=2)
    running = w.store.create_jobs([(parse_spec(base_spec()), None)])[0].id
    w.store.claim(running, "w", 30)
    out = retain(w.store, w.artifacts, w.settings)
    assert out["jobs"] == 2 and out["files"] == 1  # "old" and its re-run; their one shared file
    left = {r.id for r in w.store.list_jobs(limit=50)[0]}
    assert old not in left and old_rerun not in left
    assert {kept_original, recent, running} <= left
    assert retain(w.store, w.artifacts, w.settings) == {"jobs": 0, "files": 0, "bytes": 0}
    app.state.store.close()


def test_retention_is_off_by_default(world: World) -> None:
    world.finished({"x": b"x"}, age_days=3650)
    world.age_files(3600)
    assert retain(world.store, world.artifacts, world.settings)["jobs"] == 0
    assert world.settings.retention_days is None


def test_the_store_refuses_a_delete_that_races_a_new_rerun(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    store = Store(url)
    job = store.create_jobs([(parse_spec(base_spec()), None)])[0]
    store.claim(job.id, "w", 30)
    store.finish(job.id, "w", Status.FAILED, result=None, error=None, artifacts=[])
    store.create_jobs([(parse_spec(base_spec()), job.id)])
    with pytest.raises(Conflict, match="original of re-run"):
        store.delete_job(job.id)
    store.close()
