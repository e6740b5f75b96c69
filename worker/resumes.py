"""A running job's checkpoints into the artifact store, and a later attempt going on from the last.

The job process writes each checkpoint into its job directory (reprotrain/job/resume.py: complete
once under its final name). On each heartbeat the worker copies the newest complete one into the
content-addressed artifact store and then records it in one transaction (`Store.record_checkpoint`),
so the record only ever names a checkpoint whose every file is stored: a worker killed while
copying leaves the previous one recorded. The record moves the job's row to the queue of this
worker's environment, where the reaper sends it when the worker is lost; the attempt that claims it
there lays the files out as the job's `resume/` and the job goes on from that step boundary.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from reprotrain.checkpoint import META, complete
from reprotrain.errors import ReprotrainError
from reprotrain.files import open_regular
from reprotrain.hashing import digest_file
from reprotrain.joblog import job_event
from reprotrain.result import Resume
from reprotrain.wire import CHECKPOINT_ARTIFACT_PREFIX, JobFiles

log = logging.getLogger("reprotrain.worker")


class CheckpointShipper:
    """Stores a job's newest complete checkpoint, once, each time it is asked."""

    def __init__(self, rt: Any, job_id: str, job_dir: Path, attempt: int, queue: str | None) -> None:
        self.rt, self.job_id, self.job_dir, self.attempt, self.queue = rt, job_id, job_dir, attempt, queue
        self.shipped: str | None = None  # the directory name of the last one recorded
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """`ship` on a thread of its own, unless one still runs: copying a checkpoint of gigabytes
        must not hold up the heartbeat, or the lease would run out under a live worker."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._ship_logged, name=f"checkpoints-{self.job_id}", daemon=True
            )
            self._thread.start()

    def _ship_logged(self) -> None:
        try:
            if stored := self.ship():
                job_event(
                    "checkpoint", self.job_id, step=stored["step"], seq=stored["seq"], bytes=stored["bytes"]
                )
        except Exception:  # the database away: the next beat tries again
            log.exception("storing a checkpoint of %s failed", self.job_id)

    def ship(self) -> dict[str, Any] | None:
        found = complete(self.job_dir / JobFiles.CHECKPOINTS)
        if not found or found[-1].name == self.shipped:
            return None
        ck = found[-1]
        if ck.is_symlink() or ck.parent.is_symlink():  # the job's directory: only its own files go
            return None
        try:
            meta_file = open_regular(ck / META)
            if meta_file is None:
                raise OSError("no checkpoint record")
            with meta_file:
                meta = json.loads(meta_file.read())
            files = [
                self._store(ck, path)
                for path in sorted(ck.rglob("*"))
                if path.is_file() and not path.is_symlink()
            ]
        except (OSError, ValueError):  # pruned by the job while being read: a newer one is there
            log.info("job %s: checkpoint %s went while being stored; the next beat takes a newer one",
                     self.job_id, ck.name)  # fmt: skip
            return None
        latest = {
            "seq": meta["seq"], "step": meta["step"], "logs": meta["logs"], "epoch": meta["epoch"],
            "attempt": self.attempt, "worker": self.rt.owner, "queue": self.queue,
            "bytes": sum(z for _, _, z in files), "write_s": meta.get("seconds"),
        }  # fmt: skip
        if self.rt.store.record_checkpoint(self.job_id, self.rt.owner, latest, files, self.queue):
            self.shipped = ck.name
            return latest
        return None

    def _store(self, ck: Path, path: Path) -> tuple[str, str, int]:
        """One file, copied out of the job's reach before it is digested: the job may still write
        its directory, and what is stored must be what the digest says."""
        with tempfile.NamedTemporaryFile(dir=self.rt.settings.jobs, prefix=".ckpt-") as tmp:
            src = open_regular(path)
            if src is None:
                raise OSError(f"{path} is not a regular file")
            where = os.path.realpath(f"/proc/self/fd/{src.fileno()}")
            if not where.startswith(os.path.realpath(ck) + os.sep):  # a directory swapped for a link
                src.close()
                raise OSError(f"{path} is not inside the checkpoint")
            with src:
                shutil.copyfileobj(src, tmp)
            tmp.flush()
            digest = digest_file(Path(tmp.name))
            self.rt.artifacts.put(Path(tmp.name), digest)
            return path.relative_to(ck).as_posix(), digest, os.fstat(tmp.fileno()).st_size


def plan_resume(rt: Any, job: Any, job_dir: Path, queue: str | None) -> tuple[Path | None, list[Resume]]:
    """For an attempt of a job that has a stored checkpoint: its files laid out beside the job
    directory, for the supervisor to hand the job as its `resume/` (None where this worker's
    environment is not the checkpoint's: the job runs from the start, and the record says why),
    and every resume so far, this attempt's last."""
    latest = (job.checkpoint or {}).get("latest")
    if not latest:
        return None, []
    resume: dict[str, Any] = {
        "attempt": job.attempts, "worker": rt.owner, "from_step": latest["step"],
        "checkpoint": latest["seq"], "logs": latest["logs"],
    }  # fmt: skip
    dest = None
    if latest.get("queue") != queue:
        note = (
            f"the checkpoint was made in {latest.get('queue')}, this worker is {queue}: run from "
            "the start, not resumed across environments"
        )
        resume |= {"restored": False, "note": note}
    else:
        dest = job_dir.parent / f"resume-{job.attempts}"  # the supervisor copies it into the job's directory
        try:
            _lay_out(rt, job.id, dest)
        except (ReprotrainError, OSError) as e:  # a run from the start, never a resume from bad bytes
            log.warning("job %s: checkpoint %s not usable: %s", job.id, latest["seq"], e)
            dest = None
            resume |= {
                "restored": False,
                "note": f"the checkpoint could not be read ({e}): run from the start",
            }
    resumes = rt.store.record_resume(job.id, rt.owner, resume)
    return dest, [Resume.model_validate(r) for r in resumes]


def _lay_out(rt: Any, job_id: str, dest: Path) -> None:
    """The checkpoint's files from the artifact store, each checked against its digest."""
    shutil.rmtree(dest, ignore_errors=True)
    for a in rt.store.artifacts(job_id):
        if not a.name.startswith(CHECKPOINT_ARTIFACT_PREFIX):
            continue
        rel = a.name.removeprefix(CHECKPOINT_ARTIFACT_PREFIX)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rt.artifacts.verified(a.digest, f"checkpoint file {rel} of job {job_id}"), target)


def settle(resumes: list[Resume], child_resumed: dict[str, Any] | None) -> list[Resume]:
    """The resumes with this attempt's outcome: whether the job reached its checkpoint's step."""
    if not resumes or resumes[-1].restored is False:
        return resumes
    return [*resumes[:-1], resumes[-1].model_copy(update={"restored": child_resumed is not None})]
