"""Checkpoints on disk, and the script-mode API: `checkpoint(save)` and `resume()`.

A checkpoint is a directory `<seq>/` under the job's `checkpoints/` (wire.JobFiles.CHECKPOINTS),
complete once it has its final name: written as `.partial-<seq>/` and renamed. It holds what the
job saved, the job's events, stdout and stderr so far, its working directory (`work/`) and
`checkpoint.json` (seq, step, logs), written last. Function mode fills it from the context
(reprotrain/job/resume.py); a script fills `user/` itself:

    from reprotrain import checkpoint
    if (d := checkpoint.resume()) is not None:      # a resumed attempt: where it left off
        state = torch.load(d / "state.pt"); ...
    ...
    checkpoint.checkpoint(lambda d: torch.save(state, d / "state.pt"))   # after a step's log

`resume()` is the resume point: call it once, where the script is about to take its first step.
The logs and the working directory become the checkpoint's there, so what the script printed or
wrote before it (which the first attempt printed and wrote too) is not there twice. Outside
reprotrain both do nothing (`resume()` is None).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reprotrain.files import write_atomic
from reprotrain.wire import JobEnv, JobFiles

FORMAT = 1
KEEP = 2  # complete checkpoints kept in the job directory (the worker may still be copying one)
META, WORK, USER = "checkpoint.json", "work", "user"
LOGS = (JobFiles.EVENTS, JobFiles.STDOUT, JobFiles.STDERR)
RESUMED = "resumed.json"  # in the job directory: the job reached its checkpoint (for the supervisor)


def complete(root: Path) -> list[Path]:
    """The complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / META).is_file())


def copy_tree(src: Path, dest: Path) -> None:
    """Regular files of src into dest, by relative path (links and special files are not copied)."""
    if not src.is_dir():
        return
    for path in src.rglob("*"):
        if path.is_file() and not path.is_symlink():
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def write(
    root: Path, seq: int, job_dir: Path, workspace: Path, meta: dict[str, Any], fill: Callable[[Path], None]
) -> Path:
    """Checkpoint `seq`: `fill(dir)` writes the job's own part, then the logs so far and the
    working directory, then checkpoint.json, then the rename that makes it complete."""
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".partial-{seq:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    sys.stdout.flush()
    sys.stderr.flush()
    for name in LOGS:
        if (job_dir / name).is_file():
            shutil.copyfile(job_dir / name, tmp / name)
    copy_tree(workspace, tmp / WORK)
    meta = {"format": FORMAT, "seq": seq, "epoch": 0, **meta, "seconds": round(time.monotonic() - t0, 4)}
    write_atomic(tmp / META, json.dumps(meta))
    final = root / f"{seq:06d}"
    os.rename(tmp, final)
    for old in complete(root)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def logs_back(resume: Path, job_dir: Path, replace_events: Callable[[bytes], None] | None = None) -> None:
    """The events, stdout and stderr as they were at the checkpoint: what the attempt wrote before
    its resume point is what the first attempt wrote then, and is in them already."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {n: (resume / n).read_bytes() if (resume / n).is_file() else b"" for n in LOGS}
    if replace_events is not None:
        replace_events(saved[JobFiles.EVENTS])
    else:
        with open(job_dir / JobFiles.EVENTS, "r+b") as f:  # a writer appending to it goes on after
            f.truncate(0)
            f.write(saved[JobFiles.EVENTS])
    for fd, name in ((1, JobFiles.STDOUT), (2, JobFiles.STDERR)):
        os.ftruncate(fd, 0)  # opened O_APPEND: what follows goes after the saved bytes
        view = memoryview(saved[name])
        while view:
            view = view[os.write(fd, view) :]


def resumed_record(job_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(job_dir / RESUMED, json.dumps({"from_step": meta["step"], "checkpoint": meta["seq"],
                                                "logs": meta["logs"]}))  # fmt: skip


# ---- the script-mode API ------------------------------------------------------------------------
_seq = 0
_resumed = False


def _paths() -> tuple[Path, Path, Path] | None:
    root, events, out = (os.environ.get(k) for k in (JobEnv.CHECKPOINT_DIR, JobEnv.EVENTS, JobEnv.OUTPUT_DIR))
    if not (root and events and out):
        return None
    return Path(root), Path(events).parent, Path(out).parent


def resume() -> Path | None:
    """In a resumed attempt, the directory the script's own files were saved in (`user/` of the
    checkpoint), with the logs and working directory put back as they were; else None."""
    global _seq, _resumed
    src, paths = os.environ.get(JobEnv.RESUME_FROM), _paths()
    if not src or paths is None:
        return None
    ck = Path(src)
    if not _resumed:
        _resumed = True
        meta = json.loads((ck / META).read_text())
        _seq = int(meta["seq"])
        _, job_dir, workspace = paths
        logs_back(ck, job_dir)
        copy_tree(ck / WORK, workspace)
        resumed_record(job_dir, meta)
    return ck / USER


def checkpoint(save: Callable[[Path], None]) -> Path | None:
    """A checkpoint now: `save(dir)` writes what the script needs to go on into `dir`; the logs so
    far and the working directory are added. Call it at a step boundary (after a step's
    `report.log`). None outside reprotrain."""
    global _seq
    paths = _paths()
    if paths is None:
        return None
    root, job_dir, workspace = paths
    steps = [e for e in _events(job_dir / JobFiles.EVENTS) if e.get("kind") == "metric"]
    _seq += 1

    def fill(d: Path) -> None:
        (d / USER).mkdir()
        save(d / USER)

    meta = {"step": steps[-1]["step"] if steps else None, "logs": len(steps), "mode": "script"}
    return write(root, _seq, job_dir, workspace, meta, fill)


def _events(path: Path) -> list[dict[str, Any]]:
    from reprotrain.report import read_events

    return read_events(path)
