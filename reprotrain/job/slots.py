"""The canonical working directory: every job of a worker (or of local runs) runs at one path.

Scripts record where they ran (Lightning checkpoints store `dirpath`, configs and logs hold
paths), so a re-run in a directory of its own writes other bytes. A job's working directory is
therefore a fixed slot, `<root>/N/work`: the first free one, reused one job at a time under a
lock, so with one worker per jobs directory it is always `<root>/0/work`. When the job ends its
directory moves into the job's own. Workers sharing a root take slots 0, 1, … and a re-run may
then land in another slot: the checkpoint comparison still classes path-only differences.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from reprotrain.wire import JobFiles

MAX_SLOTS = 64


def default_root() -> Path:
    """Where local runs (`reprotrain run`) keep their slot: the user's cache, usually on the disk
    the run directories are on (a tmpfs /tmp would hold every output in memory, then copy it)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reprotrain" / "slots"


@contextlib.contextmanager
def slot(root: Path) -> Iterator[Path]:
    """The first free slot under root, locked for this job and emptied: yields its work directory."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_SLOTS):
        lock = open(root / f"{n}.lock", "a")  # noqa: SIM115 - held for the whole job
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            path = root / str(n)
            shutil.rmtree(path, ignore_errors=True)  # a crashed job's leftovers
            (path / JobFiles.WORK).mkdir(parents=True)
            yield path / JobFiles.WORK
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.close()  # releases the lock
        return
    raise BlockingIOError(f"all {MAX_SLOTS} job slots under {root} are in use")


def move_out(work: Path, dest: Path) -> None:
    """The job's working directory, into its own job directory (a rename where both share a disk)."""
    shutil.move(str(work), str(dest))
