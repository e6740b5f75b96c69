"""The worker's side of checkpoints (worker/resumes.py) on a real SQLite store and artifact store:
what is recorded, when nothing is, and where a later attempt goes on from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from reprotrain.artifacts import ArtifactStore
from reprotrain.spec import parse_spec
from reprotrain.status import Status
from reprotrain.store import Store
from reprotrain.wire import CHECKPOINT_ARTIFACT_PREFIX, JobFiles
from reprotrain.worker.resumes import CheckpointShipper, plan_resume, settle
from tests.helpers import base_spec

ENV = "env.0123456789abcdef"


def runtime(store: Store, tmp_path: Path, owner: str = "w1") -> SimpleNamespace:
    jobs = tmp_path / "jobs"
    jobs.mkdir(exist_ok=True)
    return SimpleNamespace(
        store=store,
        artifacts=ArtifactStore(tmp_path / "artifacts"),
        owner=owner,
        settings=SimpleNamespace(jobs=jobs),
    )


def checkpoint(job_dir: Path, seq: int, payload: bytes) -> Path:
    """A complete checkpoint as the job side leaves one."""
    ck = job_dir / JobFiles.CHECKPOINTS / f"{seq:06d}"
    (ck / "work" / "outputs").mkdir(parents=True)
    (ck / "state.pt").write_bytes(payload)
    (ck / "work" / "outputs" / "epoch-0.pt").write_bytes(b"out" + payload)
    (ck / "checkpoint.json").write_text(
        json.dumps({"seq": seq, "step": 3 * seq - 1, "logs": 3 * seq, "epoch": 0})
    )
    return ck


def claimed(store: Store) -> str:
    job = store.create_job(parse_spec(base_spec()))
    assert store.claim(job.id, "w1", 30)
    return job.id


def checkpoint_rows(store: Store, job_id: str) -> dict[str, str]:
    return {
        a.name: a.digest for a in store.artifacts(job_id) if a.name.startswith(CHECKPOINT_ARTIFACT_PREFIX)
    }


def test_the_newest_complete_checkpoint_is_stored_once_and_moves_the_job_to_its_environment(
    store: Store, tmp_path: Path
) -> None:
    """Stored: its files as the job's artifacts, its record, and the queue a later attempt goes to."""
    rt, job_id = runtime(store, tmp_path), claimed(store)
    job_dir = tmp_path / "job"
    checkpoint(job_dir, 1, b"first")
    shipper = CheckpointShipper(rt, job_id, job_dir, 1, ENV)
    latest = shipper.ship()
    assert latest is not None and (latest["seq"], latest["logs"], latest["queue"]) == (1, 3, ENV)
    assert shipper.ship() is None  # already stored
    row = store.get_job(job_id)
    assert row.queue == ENV and row.checkpoint["latest"]["worker"] == "w1"
    rows = checkpoint_rows(store, job_id)
    assert set(rows) == {
        CHECKPOINT_ARTIFACT_PREFIX + n for n in ("state.pt", "checkpoint.json", "work/outputs/epoch-0.pt")
    }
    assert rt.artifacts.verified(rows[CHECKPOINT_ARTIFACT_PREFIX + "state.pt"]).read_bytes() == b"first"


def test_a_checkpoint_whose_copy_is_cut_short_leaves_the_previous_one_recorded(
    store: Store, tmp_path: Path, monkeypatch
) -> None:
    """The worker dies (here: its copy fails) halfway through storing checkpoint 2: the record
    still names checkpoint 1, whose files are all stored."""
    rt, job_id = runtime(store, tmp_path), claimed(store)
    job_dir = tmp_path / "job"
    checkpoint(job_dir, 1, b"first")
    shipper = CheckpointShipper(rt, job_id, job_dir, 1, ENV)
    shipper.ship()
    before = checkpoint_rows(store, job_id)
    checkpoint(job_dir, 2, b"second")
    real, calls = rt.artifacts.put, []

    def dies_halfway(src: Path, digest: str) -> Path:
        calls.append(digest)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(src, digest)

    monkeypatch.setattr(rt.artifacts, "put", dies_halfway)
    assert shipper.ship() is None
    assert store.get_job(job_id).checkpoint["latest"]["seq"] == 1 and checkpoint_rows(store, job_id) == before
    monkeypatch.setattr(rt.artifacts, "put", real)
    assert shipper.ship()["seq"] == 2  # the next beat stores it


def test_only_the_lease_owner_records_and_a_linked_checkpoint_is_not_stored(
    store: Store, tmp_path: Path
) -> None:
    """A worker that lost the lease records nothing; a checkpoint directory that is a link (the job
    pointing the worker at its own files) is never copied."""
    job_id = claimed(store)
    job_dir = tmp_path / "job"
    checkpoint(job_dir, 1, b"x")
    assert CheckpointShipper(runtime(store, tmp_path, owner="w2"), job_id, job_dir, 1, ENV).ship() is None
    assert store.get_job(job_id).checkpoint is None
    secret = tmp_path / "worker-secret"
    (secret / "checkpoints").mkdir(parents=True)
    (secret / "checkpoint.json").write_text(json.dumps({"seq": 9, "step": 1, "logs": 1, "epoch": 0}))
    os.symlink(secret, job_dir / JobFiles.CHECKPOINTS / "000009")
    assert CheckpointShipper(runtime(store, tmp_path), job_id, job_dir, 1, ENV).ship() is None
    assert store.get_job(job_id).checkpoint is None


def test_a_later_attempt_goes_on_only_in_the_checkpoints_environment(store: Store, tmp_path: Path) -> None:
    """Same environment: the files laid out as stored and the resume recorded; another: nothing
    laid out, and the record says why; a stored file that changed is not resumed from."""
    rt, job_id = runtime(store, tmp_path), claimed(store)
    job_dir = tmp_path / "job"
    checkpoint(job_dir, 1, b"first")
    CheckpointShipper(rt, job_id, job_dir, 1, ENV).ship()
    assert store.get_job(job_id).queue == ENV

    elsewhere = SimpleNamespace(**{**vars(rt), "owner": "w9"})
    _force_claim(store, job_id, "w9")
    dest, resumes = plan_resume(
        elsewhere, store.get_job(job_id), tmp_path / "jobs" / "a2", "env.ffffffffffffffff"
    )
    assert (
        dest is None and resumes[-1].restored is False and "env.ffffffffffffffff" in (resumes[-1].note or "")
    )

    _force_claim(store, job_id, "w3")
    here = SimpleNamespace(**{**vars(rt), "owner": "w3"})
    dest, resumes = plan_resume(here, store.get_job(job_id), tmp_path / "jobs" / "a3", ENV)
    assert dest is not None and (dest / "state.pt").read_bytes() == b"first"
    assert (dest / "work" / "outputs" / "epoch-0.pt").read_bytes() == b"outfirst"
    assert (
        [r.worker for r in resumes] == ["w9", "w3"]
        and resumes[-1].from_step == 2
        and resumes[-1].restored is None
    )
    assert (
        settle(resumes, {"from_step": 2})[-1].restored is True and settle(resumes, None)[-1].restored is False
    )

    stored = rt.artifacts.path(checkpoint_rows(store, job_id)[CHECKPOINT_ARTIFACT_PREFIX + "state.pt"])
    os.chmod(stored, 0o644)
    stored.write_bytes(b"changed")
    _force_claim(store, job_id, "w4")
    bad = SimpleNamespace(**{**vars(rt), "owner": "w4"})
    dest, resumes = plan_resume(bad, store.get_job(job_id), tmp_path / "jobs" / "a4", ENV)
    assert dest is None and resumes[-1].restored is False and "could not be read" in resumes[-1].note


def test_an_ended_job_holds_no_checkpoint_files(store: Store, tmp_path: Path) -> None:
    """Finishing drops the checkpoint's artifact rows (the retention sweep then takes the files)."""
    rt, job_id = runtime(store, tmp_path), claimed(store)
    checkpoint(tmp_path / "job", 1, b"first")
    CheckpointShipper(rt, job_id, tmp_path / "job", 1, ENV).ship()
    assert checkpoint_rows(store, job_id)
    assert store.finish(
        job_id, "w1", Status.FAILED, result=None, error=None, artifacts=[("out", "d" * 64, 1)]
    )
    assert checkpoint_rows(store, job_id) == {} and [a.name for a in store.artifacts(job_id)] == ["out"]


def _force_claim(store: Store, job_id: str, owner: str) -> None:
    """The job as another attempt of `owner` holds it (as a claim after an expired lease does)."""
    from sqlalchemy import update

    from reprotrain.store.tables import JobRow

    with store.session() as s:
        s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(status=Status.RUNNING.value, lease_owner=owner, attempts=JobRow.attempts + 1)
        )


def test_show_says_how_each_attempt_went_on() -> None:
    """`reprotrain show` prints a running job's checkpoint and each resume in words."""
    from reprotrain.cli.output import format_resumes

    job = {
        "status": "RUNNING",
        "checkpoint": {"seq": 4, "step": 11, "logs": 12, "attempt": 2},
        "resumes": [
            {"attempt": 2, "worker": "w3", "from_step": 5, "restored": True},
            {"attempt": 3, "worker": "w9", "from_step": 11, "restored": False, "note": "made in env.a"},
        ],
    }
    assert format_resumes(job) == [
        "checkpoint 4 after step 11 (12 logged), attempt 2",
        "resumed   attempt 2 on w3: went on after step 5",
        "resumed   attempt 3 on w9: ran from the start (made in env.a)",
    ]
