"""What tests share besides fixtures: example specs, free ports, waiting, real servers and stacks.

Fixtures live in the conftest files; everything a test imports by name lives here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from reprotrain.bundles import make_bundle
from reprotrain.client import Client

ROOT = Path(__file__).resolve().parents[1]


def base_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "test",
        "entrypoint": "reprotrain.examples.mlp:train",
        "params": {"epochs": 1, "samples": 128},
        "seed": 1234,
        "determinism": {"policy": "strict"},
        "device": "cpu",
        "track": {"digest_every": 1},
    }
    spec.update(overrides)
    return spec


PG_ADMIN = os.environ.get("REPROTRAIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s")


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    dbs: int = 0

    def url(self) -> str:
        self.dbs += 1
        return f"redis://127.0.0.1:{self.port}/{self.dbs}"


def spawn_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A redis-server of our own on `port`, keeping nothing on disk; returns once it answers."""
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("redis-server is not installed")
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*argv, "--dir", str(workdir), "--databases", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    wait_for(lambda: redis.Redis(port=port).ping(), 10, "redis-server")
    return proc


def make_database(backend: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database for one stack: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'reprotrain.db'}"
    from sqlalchemy import text

    admin = request.getfixturevalue("postgres_admin")
    name = f"reprotrain_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    request.addfinalizer(drop)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


@dataclass
class Stack:
    """A running API and worker(s) sharing one database, broker and data directory."""

    env: dict[str, str]
    url: str
    api: subprocess.Popen[bytes]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)

    clients: dict[str | None, Client] = field(default_factory=dict)

    def client(self, token: str | None = None) -> Client:
        if token not in self.clients:
            self.clients[token] = Client(self.url, token)
        return self.clients[token]

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One more worker; `env` added to the stack's (another environment, other queues)."""
        log = open(self.logs / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        self.files.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "reprotrain.cli", "worker"],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def stop(self) -> None:
        for p in [*self.workers, self.api]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.api]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self.files:
            f.close()
        for c in self.clients.values():
            c.close()


def start_stack(
    tmp: Path,
    db_url: str,
    broker_url: str | None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    api_args: tuple[str, ...] = (),
) -> Stack:
    port = free_port()
    env = {
        **os.environ,
        "REPROTRAIN_DATA_DIR": str(tmp / "data"),
        "REPROTRAIN_DATABASE_URL": db_url,
        "REPROTRAIN_PORT": str(port),
        "REPROTRAIN_MAINTENANCE_S": "0.5",
        "REPROTRAIN_LEASE_S": "4",
        "REPROTRAIN_HEARTBEAT_S": "0.5",
        "REPROTRAIN_RESEND_AFTER_S": "3",
        **(extra_env or {}),
    }
    env.pop("REPROTRAIN_BROKER_URL", None)
    if broker_url:
        env["REPROTRAIN_BROKER_URL"] = broker_url
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "reprotrain.cli", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    api_log = open(logs / "api.log", "wb")  # noqa: SIM115
    api = subprocess.Popen(
        [sys.executable, "-m", "reprotrain.cli", "api", *api_args],
        env=env,
        cwd=ROOT,
        stdout=api_log,
        stderr=subprocess.STDOUT,
    )
    stack = Stack(env=env, url=f"http://127.0.0.1:{port}", api=api, logs=logs, files=[api_log])
    for _ in range(workers):
        stack.start_worker()
    try:
        wait_for(lambda: httpx.get(f"{stack.url}/readyz").status_code == 200, 60, "API")
    except TimeoutError:
        stack.stop()
        raise AssertionError((logs / "api.log").read_text()[-3000:]) from None
    return stack


def script_spec(
    client: Client, code_dir: Path, text: str, name: str, script: str = "job.py"
) -> dict[str, Any]:
    """A spec (not yet submitted) running `python script` with `text` from a fresh bundle of code_dir."""
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / script).write_text(text)
    digest = client.upload_bundle(make_bundle(code_dir))["digest"]
    return {"name": name, "command": ["python", script], "bundle": digest, "seed": 1}


def submit_script(client: Client, code_dir: Path, name: str, script: str) -> dict[str, Any]:
    """Upload code_dir as a bundle and submit `python script` from it under the seeded policy."""
    digest = client.upload_bundle(make_bundle(code_dir))["digest"]
    return client.submit(
        {
            "name": name,
            "command": ["python", script],
            "bundle": digest,
            "seed": 1,
            "determinism": {"policy": "seeded"},
            "device": "cpu",
        }
    )


@dataclass
class Serve:
    """A `reprotrain serve` process (API + embedded worker) and where its output goes."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def start_serve(tmp: Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Serve:
    """`reprotrain serve` on a free port with its data under tmp, started from `cwd` with `env` added
    to ours (less our REPROTRAIN_* settings); returns once ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROTRAIN_")} | (env or {})
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("reprotrain")),
                "serve",
                "--data-dir",
                str(tmp / "data"),
                "--port",
                str(port),
            ],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job has
        )
    serve = Serve(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_for(lambda: httpx.get(f"{serve.url}/readyz").status_code == 200, 60, "reprotrain serve")
    except TimeoutError:
        serve.stop()
        raise AssertionError(serve.output()[-3000:]) from None
    return serve


def fingerprint_dict(**overrides: Any) -> dict[str, Any]:
    """A whole, valid fingerprint as stored (a CPU job, no image), with sections replaced by `overrides`."""
    fp: dict[str, Any] = {
        "python": {"version": "3.11.7", "implementation": "CPython"},
        "os": {"system": "Linux", "release": "6.1", "machine": "x86_64", "libc": "glibc 2.36"},
        "cpu": {"model": "Test CPU", "flags": "avx2 sse4_2", "count": 2},
        "torch": {"version": "2.13.0", "git": "abc", "cuda_build": None, "debug": False},
        "numpy": {"version": "2.1.0"},
        "blas": {"numpy": "openblas 0.3", "torch": "BLAS_INFO=mkl"},
        "packages": {"digest": "p", "list": {"torch": "2.13.0"}},
        "image": None,
        "cuda": {"used": False},
        "device": "cpu",
        "determinism": {
            "deterministic_algorithms": "error",
            "cudnn_benchmark": False,
            "cudnn_deterministic": True,
            "num_threads": 1,
            "allow_tf32": {"matmul": False, "cudnn": False},
            "float32_matmul_precision": "highest",
            "fill_uninitialized_memory": True,
            "mkldnn_deterministic": True,
            "sdpa_math_only": False,
            "cublas_workspace_config": ":4096:8",
            "python_hash_seed": "0",
            "source_date_epoch": "315532800",
            "mkl_cbwr": None,
            "mkl_cbwr_branch": "OFF",
        },
        "env": {"PYTHONHASHSEED": "0"},
        "inputs": {},
        "bundle": None,
        "host": {"hostname": "h1", "pid": 100},
    }
    fp.update(overrides)
    return fp


def sent_long_ago(store: Any, job_id: str) -> None:
    """Mark a job as sent an hour ago (its message may be lost by now)."""
    from datetime import timedelta

    from sqlalchemy import update

    from reprotrain.store.repo import now
    from reprotrain.store.tables import JobRow

    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id).values(sent_at=now() - timedelta(hours=1)))
