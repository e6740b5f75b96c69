"""Starting and supervising job processes: the fork server client and a fresh-interpreter twin.

`ForkRunner` keeps one fork server (torch preloaded) and starts each job as a fork of it;
`SpawnRunner` starts each job in a new interpreter, for comparison and as a fallback. Both give a
`JobHandle`: wait for the exit status, or signal the job's whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol

from reprotrain.errors import LaunchError
from reprotrain.fingerprint import StaticFacts
from reprotrain.isolation import Isolation
from reprotrain.job.request import LaunchRequest
from reprotrain.policy import PYTHON_HASH_SEED
from reprotrain.procs import python_argv, stop
from reprotrain.wire import BUILD_FACTS_ENV, JobFiles

SERVER_START_TIMEOUT_S = 120


def _python_env() -> dict[str, str]:
    """The fork server's environment: the worker's, less its settings (a server of jobs has no use
    for the database's URL; each job's process narrows it further, to an allowlist)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_") or k == BUILD_FACTS_ENV}
    env["PYTHONHASHSEED"] = PYTHON_HASH_SEED
    return env


class JobHandle(Protocol):
    pid: int

    def wait(self, timeout: float) -> int | None:
        """The exit status once the job process ended, or None if still running at timeout."""

    def signal(self, sig: int) -> None:
        """Send a signal to the job's whole process group."""

    def close(self) -> None: ...


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # group not formed yet or gone; fall back to the leader
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class _ForkedJob:
    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn, self.pid = conn, pid
        self._buf = b""
        self._exit: int | None = None

    def wait(self, timeout: float) -> int | None:
        if self._exit is not None:
            return self._exit
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(self.conn, selectors.EVENT_READ)
                if not sel.select(left):
                    return None
            chunk = self.conn.recv(4096)
            if not chunk:
                raise ForkServerGone(f"the fork server died while job process {self.pid} ran")
            self._buf += chunk
        try:
            self._exit = int(json.loads(self._buf.split(b"\n", 1)[0])["exit"])
        except (ValueError, KeyError, TypeError):
            why = f"the fork server sent a malformed exit report for job process {self.pid}"
            raise ForkServerGone(why) from None
        return self._exit

    def signal(self, sig: int) -> None:
        _signal_group(self.pid, sig)

    def close(self) -> None:
        self.conn.close()


CUDA_PROBE_TIMEOUT_S = 120  # importing torch and creating a CUDA context, once per worker


def probe_cuda(python: str = sys.executable) -> dict | None:
    """The CUDA facts a job on this host would record (GPU model, driver, CUDA, cuDNN), read in a
    child by the job side's own collector, or None on a host without an NVIDIA driver. A child: the
    worker never imports torch, and the fork server must not create a CUDA context before forking."""
    from reprotrain.job.fingerprint import NVIDIA_DRIVER

    if not NVIDIA_DRIVER.exists():
        return None
    try:
        out = subprocess.run(
            python_argv(python, "reprotrain.job.fingerprint"),
            env=_python_env(),
            capture_output=True,
            timeout=CUDA_PROBE_TIMEOUT_S,
            check=True,
        )
        facts = json.loads(out.stdout)
    except (subprocess.SubprocessError, OSError, ValueError):
        return None  # no usable GPU: the worker offers its static environment only
    return facts if isinstance(facts, dict) else None


class ForkServerGone(LaunchError):
    """The fork server died while a job ran (the job died with it: its parent-death signal)."""


class ForkRunner:
    """One fork server per runner; `launch` costs a fork instead of an interpreter start. A server
    that died (a job may kill its parent) is started again on the next launch."""

    def __init__(self, python: str = sys.executable, isolation: str = "auto", job_uid: int = 65534) -> None:
        self.python = python
        self.want, self.job_uid = isolation, job_uid
        self.isolation = Isolation(mode="none", network="host")  # what the server's probe found
        self.static: StaticFacts | None = None  # the fork server's own reading: no job can patch it
        self._dir = tempfile.mkdtemp(prefix="reprotrain-fs-")
        self.sock_path = os.path.join(self._dir, "fork.sock")
        self._log = open(os.path.join(self._dir, "server.log"), "ab")  # noqa: SIM115
        self.restarts = 0
        self._start()
        self.cuda = probe_cuda(python)  # read once: the GPUs, driver and CUDA do not change under a worker

    def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)  # a dead server's socket
        self.proc = subprocess.Popen(
            python_argv(
                self.python, "reprotrain.job.forkserver", self.sock_path, self.want, str(self.job_uid)
            ),
            env=_python_env(),
            cwd=self._dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._await_ready()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _await_ready(self) -> None:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(SERVER_START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
        word, _, isolation = line.strip().partition(b" ")
        if word != b"READY":
            self.close()
            log = Path(self._dir, "server.log").read_text(errors="replace")[-2000:]
            raise LaunchError(f"fork server did not start: {log.strip() or 'no output'}")
        ready = json.loads(isolation)
        self.isolation = Isolation.model_validate(ready["isolation"])
        self.static = StaticFacts.model_validate(ready["static"])

    def launch(self, req: LaunchRequest) -> JobHandle:
        if not self.alive:
            if self.proc.stdout:
                self.proc.stdout.close()
            self.restarts += 1
            self._start()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.sock_path)
        conn.sendall(req.model_dump_json().encode() + b"\n")
        reply = conn.makefile("rb").readline()
        try:
            msg = json.loads(reply)
            pid = int(msg["pid"])
        except (ValueError, KeyError) as e:
            conn.close()
            raise LaunchError(f"fork server refused the job: {reply!r}") from e
        return _ForkedJob(conn, pid)

    def close(self) -> None:
        stop(self.proc, 10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> ForkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SpawnedJob:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc, self.pid = proc, proc.pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        _signal_group(self.pid, sig)

    def close(self) -> None:
        pass


class SpawnRunner:
    """Each job in a fresh interpreter: slower to start, same job process code; unconfined (a
    fresh interpreter may start threads before the job could enter its namespaces)."""

    isolation = Isolation(mode="none", network="host", note="the spawn runner does not confine jobs")
    static = cuda = None

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def launch(self, req: LaunchRequest) -> JobHandle:
        path = req.dir / JobFiles.REQUEST
        if not path.exists():
            path.write_text(req.model_dump_json())
        proc = subprocess.Popen(
            python_argv(self.python, "reprotrain.job.process", str(path)),
            env=_python_env(),
            cwd=req.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        return _SpawnedJob(proc)

    def close(self) -> None:
        pass

    def __enter__(self) -> SpawnRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
