"""Isolation and limits: own process group, timeout kills the whole group, cancel."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.helpers import base_spec

# the child sleeps for a unique number of seconds, to be found in the host's /proc afterwards: a
# confined job's pids are its PID namespace's, not the host's
SLEEPER = """
import os, subprocess, time
child = subprocess.Popen(["sleep", f"300.{os.urandom(4).hex()}"[:12]])
open("child.token", "w").write(" ".join(child.args))
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


def _running(text: str, by: str = "cmdline") -> list[int]:
    """Host pids of live (not zombie) processes whose command line (or comm) is exactly `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / by).read_bytes().replace(b"\0", b" ").strip() == text.encode():
                found.append(int(proc.name))
        except OSError:
            continue
    return [p for p in found if _alive(p)]


def _wait_gone(text: str, seconds: float = 10, by: str = "cmdline") -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _running(text, by):
            return True
        time.sleep(0.05)
    return False


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
    if r.isolation.mode == "none":
        assert job_pid == pgid, "the job leads its own process group"
        assert pgid != os.getpgid(0)
    else:  # its group's leader is the relay outside its PID namespace, which it cannot name
        assert (job_pid, pgid) == (2, 0), "the job is PID 2 of a namespace of its own, under its init"
    assert _wait_gone((job_dir / "work" / "child.token").read_text())
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
    assert _wait_gone((job_dir / "work" / "child.token").read_text())


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


# each daemon names itself (its comm) by a token of this run, to be found in the host's /proc
DAEMONS = """
import os, subprocess, sys, time
tokens = {name: "rt" + os.urandom(6).hex() for name in ("daemon", "double")}
name_me = "open('/proc/self/comm', 'w').write({!r}); print(flush=True)"
# a setsid'd process (its own session and group: a process-group kill misses it) ...
code = name_me.format(tokens["daemon"]) + "; import time; time.sleep(300)"
d = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
d.stdout.readline()
# ... and a classic double-fork daemon that never execs, orphaned before the job ends
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        exec(name_me.format(tokens["double"]))
        os.write(w, b"ok")
        time.sleep(300)
    os._exit(0)
os.close(w)
os.read(r, 2)
for name, token in tokens.items():
    open(name + ".token", "w").write(token)
print("daemons started", flush=True)
"""


def test_daemonized_processes_die_with_the_job(run_job, tmp_path: Path) -> None:
    """What a job setsid's or double-forks away does not outlive it, though the job succeeded."""
    (tmp_path / "daemons.py").write_text(DAEMONS)
    spec = {**sleeper_spec(timeout_s=60), "name": "daemons", "command": ["python", "daemons.py"]}
    r, job_dir = run_job(spec, code_dir=tmp_path)
    assert r.status == "SUCCEEDED", r.error
    for name in ("daemon", "double"):
        token = (job_dir / "work" / f"{name}.token").read_text()
        assert _wait_gone(token, by="comm"), f"{name}: process {token} outlived its job"
