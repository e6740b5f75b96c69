"""Isolation and limits: own process group, timeout kills the whole group, cancel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.helpers import base_spec

SLEEPER = """
import os, subprocess, time
child = subprocess.Popen(["sleep", "300"])
open("child.pid", "w").write(str(child.pid))
open("me.pid", "w").write(f"{os.getpid()} {os.getpgid(0)}")
print("sleeping", flush=True)
time.sleep(300)
"""


def sleeper_spec(timeout_s: float) -> dict:
    return {
        "name": "sleepy",
        "command": ["python", "sleeper.py"],
        "seed": 1,
        "determinism": {"policy": "seeded"},
        "device": "cpu",
        "timeout_s": timeout_s,
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that nobody reaped yet is dead for our purposes
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_timeout_kills_the_job_and_its_children(run_job, tmp_path: Path) -> None:
    """A job sleeping past timeout_s ends TIMED_OUT, and the process it started dies too."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    spec = sleeper_spec(timeout_s=3)
    r, job_dir = run_job(spec, code_dir=tmp_path)
    assert r.status == "TIMED_OUT"
    assert "timeout" in r.error.message
    job_pid, pgid = map(int, (job_dir / "work" / "me.pid").read_text().split())
    assert job_pid == pgid, "the job leads its own process group"
    assert pgid != os.getpgid(0)
    assert _wait_dead(int((job_dir / "work" / "child.pid").read_text()))
    assert "sleeping" in (job_dir / "stdout.log").read_text()


def test_cancel_terminates_the_job(run_job, tmp_path: Path) -> None:
    """Setting the cancel event stops a running job with SIGTERM: status CANCELED."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    spec = sleeper_spec(timeout_s=60)
    cancel = threading.Event()
    started: list[int] = []

    def on_start(handle) -> None:
        started.append(handle.pid)
        threading.Timer(1.0, cancel.set).start()

    t0 = time.monotonic()
    r, job_dir = run_job(spec, code_dir=tmp_path, cancel=cancel, on_start=on_start)
    assert r.status == "CANCELED"
    assert time.monotonic() - t0 < 30
    assert _wait_dead(started[0])
    assert _wait_dead(int((job_dir / "work" / "child.pid").read_text()))


def test_job_crash_is_a_failure_not_a_hang(run_job, tmp_path: Path) -> None:
    """A job process killed by a signal ends FAILED, naming the signal."""
    (tmp_path / "boom.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    spec = {
        "name": "boom",
        "command": ["python", "boom.py"],
        "seed": 1,
        "determinism": {"policy": "seeded"},
        "device": "cpu",
    }
    r, _ = run_job(spec, code_dir=tmp_path)
    assert r.status == "FAILED"
    assert "killed by signal 9" in r.error.message


def test_fork_server_survives_many_jobs(run_job) -> None:
    """The same server runs job after job; results stay identical."""
    digests = {
        run_job(base_spec(params={"epochs": 1, "samples": 64}))[0].digests["model"]["overall"]
        for _ in range(3)
    }
    assert len(digests) == 1


DAEMONS = """
import os, subprocess, sys, time
# a setsid'd process (its own session and group: a process-group kill misses it) ...
d = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
open("daemon.pid", "w").write(str(d.pid))
# ... and a classic double-fork daemon that never execs, orphaned before the job ends
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
    os._exit(0)
os.close(w)
open("double.pid", "w").write(os.read(r, 32).decode())
print("daemons started", flush=True)
"""


def test_daemonized_processes_die_with_the_job(run_job, tmp_path: Path) -> None:
    """What a job setsid's or double-forks away does not outlive it, though the job succeeded."""
    (tmp_path / "daemons.py").write_text(DAEMONS)
    spec = {**sleeper_spec(timeout_s=60), "name": "daemons", "command": ["python", "daemons.py"]}
    r, job_dir = run_job(spec, code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    for name in ("daemon.pid", "double.pid"):
        pid = int((job_dir / "work" / name).read_text())
        assert _wait_dead(pid), f"{name}: process {pid} outlived its job"
