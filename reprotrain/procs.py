"""Process helpers shared by the job launcher and the CLI."""

from __future__ import annotations

import ctypes
import signal
import subprocess
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (elsewhere: a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):  # not Linux: callers still clean up process groups
        pass


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux): a job's daemonized (setsid, double-fork)
    processes then stay under it instead of escaping to init. False where unsupported."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
    except (OSError, AttributeError):
        return False


def children(pid: int) -> list[int]:
    """The live children of `pid` (Linux /proc; empty elsewhere or once it is gone)."""
    from pathlib import Path

    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        return []
    return found


def python_argv(python: str, module: str, *args: str) -> list[str]:
    """`python -P -m module`: -P keeps the caller's working directory off sys.path, so a `worker.py`
    or `reprotrain/` lying there can neither shadow our modules nor leak into every job's sys.path."""
    return [python, "-P", "-m", module, *args]


def stop(proc: subprocess.Popen[Any], grace_s: float) -> int:
    """SIGTERM, up to grace_s to exit, then SIGKILL; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
