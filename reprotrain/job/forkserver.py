"""The fork server: a process that has imported torch (never CUDA) and forks one child per job.

Protocol, one Unix-socket connection per job: the client sends one JSON line (a LaunchRequest);
the server forks, answers ``{"pid": N}``, and when the child exits ``{"exit": CODE}``. A client
that disconnects early takes its job with it: the job's process group is killed.

Hazards this module exists to respect (both measured): the server must never run torch
work (a forked child would hang on its first threaded op), and it must run with a fixed
PYTHONHASHSEED, which every child inherits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

from reprotrain.job import confine, fingerprint
from reprotrain.policy import PYTHON_HASH_SEED
from reprotrain.procs import become_subreaper, children, die_with_parent


def preload() -> None:
    """Import what jobs use so children start warm; touches no CUDA and runs no torch op."""
    import numpy  # noqa: F401
    import torch

    # use_deterministic_algorithms() imports inductor (~2 s measured): pay it once, here
    import torch._dynamo
    import torch._inductor
    import torch.nn
    import torch.optim
    import torch.utils.data  # noqa: F401

    import reprotrain.job.apply
    import reprotrain.job.context
    import reprotrain.job.digest
    import reprotrain.job.process  # noqa: F401
    from reprotrain.job import fingerprint

    fingerprint.static_facts()


class Server:
    def __init__(self, sock_path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(64)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "child")
        self.jobs: dict[int, socket.socket | None] = {}  # None: its client left
        self.parent = os.getppid()
        self.home = os.path.dirname(os.path.abspath(sock_path))
        self.running = True

    def _stop(self, *_: Any) -> None:
        self.running = False

    def serve(self) -> None:
        while self.running and os.getppid() == self.parent:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "child":
                    os.read(self.wake_r, 4096)
                    self._reap()
                else:
                    self._client_gone(key.data)
        for pid in list(self.jobs):
            _killpg(pid)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        try:
            line = conn.makefile("rb").readline()
            request = json.loads(line)
        except (OSError, ValueError) as e:
            _send(conn, {"error": f"bad request: {e}"})
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            conn.close()  # the job must not hold its supervisor's connection, nor this server's pipes
            self._child(request)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
        except OSError:
            pass
        self.jobs[pid] = conn
        _send(conn, {"pid": pid})
        self.sel.register(conn, selectors.EVENT_READ, pid)

    def _child(self, request: dict[str, Any]) -> None:
        code = 70
        try:
            os.setpgid(0, 0)
            die_with_parent(signal.SIGKILL)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            self.sel.close()
            self.listener.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for conn in self.jobs.values():
                if conn is not None:
                    conn.close()
            from reprotrain.job import process
            from reprotrain.job.request import LaunchRequest

            req = LaunchRequest.model_validate(request)
            # this server's socket is never the job's to reach: it starts processes unconfined
            plan = req.confine.model_copy(update={"hidden": [*req.confine.hidden, self.home]})
            code = process.run(req.model_copy(update={"confine": plan}))
        except BaseException:  # noqa: BLE001 - never return into the server's loop
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)

    def _reap(self) -> None:
        """Reap ended jobs and answer their clients; kill what ended jobs left behind.

        This server is a subreaper, as is every job process: a process a job daemonized (setsid,
        double fork) is adopted by the job, and by this server once the job has ended. Any child
        here that is not a running job is such a leftover, and is killed (its own children are
        adopted in turn, and killed on the next pass).
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = self.jobs.pop(pid, None)
            if conn is not None:
                self.sel.unregister(conn)
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()
        for stray in children(os.getpid()):
            if stray not in self.jobs:
                with contextlib.suppress(OSError):
                    os.kill(stray, signal.SIGKILL)

    def _client_gone(self, pid: int) -> None:
        conn = self.jobs.get(pid)
        if conn is None:
            return
        try:
            data = conn.recv(1)
        except OSError:
            data = b""
        if not data:  # EOF: nobody waits for this job any more
            _killpg(pid)
            self.sel.unregister(conn)
            conn.close()
            self.jobs[pid] = None


def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(obj).encode() + b"\n")


def _killpg(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def main() -> None:
    """`python -m reprotrain.job.forkserver SOCKET [ISOLATION JOB_UID]`: prints `READY {isolation}`."""
    if os.environ.get("PYTHONHASHSEED") != PYTHON_HASH_SEED:
        sys.exit(f"fork server must start with PYTHONHASHSEED={PYTHON_HASH_SEED}")
    want, job_uid = (sys.argv[2], int(sys.argv[3])) if len(sys.argv) > 3 else ("auto", 65534)
    try:
        isolation = confine.probe(want, job_uid)  # before preload: a probe's fork is cheaper
    except confine.ConfineError as e:
        sys.exit(str(e))
    preload()
    # torch and inductor leave ~3*10^5 long-lived objects: frozen, no job's collector re-scans them,
    # and a job's collections dirty none of the pages it shares with this server
    gc.collect()
    gc.freeze()
    become_subreaper()
    server = Server(sys.argv[1])
    # what the worker records of the job's environment, read here, where no job code ever ran
    ready = {
        "isolation": isolation.model_dump(mode="json"),
        "static": fingerprint.static_facts().model_dump(mode="json"),
    }
    print("READY", json.dumps(ready), flush=True)
    server.serve()


if __name__ == "__main__":
    main()
