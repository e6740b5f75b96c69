"""Server commands: `serve` (embedded: API + one worker, no servers to install), `api`, `worker`, `db`."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from reprotrain import joblog
from reprotrain.errors import LaunchError
from reprotrain.procs import die_with_parent, python_argv, stop
from reprotrain.settings import Settings, load_settings


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the API and one worker on this machine (SQLite, local broker)",
        description="The embedded default: the REST API plus one Celery worker, with "
        "SQLite, local artifacts and kombu's filesystem broker unless "
        "REPROTRAIN_* variables say otherwise.",
    )
    p.add_argument(
        "--data-dir",
        help="where the database, broker and artifacts live "
        "(env REPROTRAIN_DATA_DIR; default ./reprotrain-data)",
    )
    p.add_argument("--host", help="listen address (default 127.0.0.1; beyond loopback needs tokens)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.add_argument("--no-worker", action="store_true", help="API only; run workers elsewhere")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("api", help="run the REST API only (as in docker compose)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes on the one port, each with its own group commit (default 1; "
        'on PostgreSQL one per core: docs/architecture.md, "The life of one job")',
    )
    p.set_defaults(func=lambda a: cmd_serve(argparse.Namespace(**vars(a), data_dir=None, no_worker=True)))

    p = sub.add_parser("worker", help="run one Celery worker (one job at a time)")
    p.add_argument("--queues", help="comma-separated queues (env REPROTRAIN_QUEUES; default 'default')")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("db", help="database schema migrations")
    p.add_argument("action", choices=["upgrade", "current"], help="upgrade to the latest schema, or show it")
    p.set_defaults(func=cmd_db)


def settings_env(s: Settings) -> dict[str, str]:
    """The settings a child process must share with this one, as absolute values."""
    return {
        "REPROTRAIN_DATA_DIR": str(s.data_dir.resolve()),
        "REPROTRAIN_DATABASE_URL": s.db_url,
        "REPROTRAIN_BROKER_URL": s.broker,
        "REPROTRAIN_ARTIFACTS_DIR": str(s.artifacts.resolve()),
        "REPROTRAIN_JOBS_DIR": str(s.jobs.resolve()),
    }


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from reprotrain.service.app import create_app
    from reprotrain.store.migrate import upgrade

    settings = load_settings(data_dir=args.data_dir, host=args.host, port=args.port)
    joblog.configure(settings.log_format)  # one handler: ours, uvicorn's and the access log alike
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise LaunchError(f"--workers must be at least 1, not {workers}")
    if workers > 1:
        return serve_processes(settings, workers)
    app = create_app(settings)  # refuses to listen beyond loopback without tokens
    # Everything imported and built so far (FastAPI, SQLAlchemy, Celery, kombu: ~10^5 objects) lives
    # as long as the process. Frozen, the collector stops re-scanning it on every full collection,
    # which per-request garbage triggers often: a quarter of the API's CPU under load.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=settings.access_log,
            log_config=None,  # uvicorn's loggers go to the root handler set above
        )
    )
    worker = (
        None
        if args.no_worker
        else WorkerProcess(settings, on_exit=lambda: setattr(server, "should_exit", True))
    )
    try:
        server.run()
    finally:
        if worker is not None:
            worker.stop()
    if worker is not None and worker.died:
        raise LaunchError(
            f"the worker exited with status {worker.returncode}; its last words:\n{worker.tail()}"
        )
    return 0


def serve_processes(settings: Settings, workers: int) -> int:
    """`api --workers N`: uvicorn's supervisor starts N API processes that share the port; each
    builds its app from the settings passed down in the environment (`service.app.from_env`)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from reprotrain.service.app import check_settings

    if settings.db_url.startswith("sqlite"):
        raise LaunchError("--workers above 1 needs PostgreSQL: SQLite has one writer at a time")
    check_settings(settings)  # what create_app refuses, refused before any process starts
    os.environ.update(
        settings_env(settings) | {"REPROTRAIN_HOST": settings.host, "REPROTRAIN_PORT": str(settings.port)}
    )

    config = uvicorn.Config(
        "reprotrain.service.app:from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_level="info",
        access_log=settings.access_log,
        log_config=None,
    )
    Multiprocess(config, sockets=[tcp_socket(settings.host, settings.port)]).run()
    return 0


def tcp_socket(host: str, port: int) -> socket.socket:
    """The listening socket the API processes share, made as TCP explicitly: the processes get it
    with the protocol it was made with, and asyncio sets TCP_NODELAY on connections only where
    that says TCP (uvicorn's own socket says 0: every response then waits ~40 ms for an ACK)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LaunchError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(True)
    return sock


class WorkerProcess:
    """The embedded worker: a child process whose death ends `serve` (a server with no worker
    would accept jobs that never run). Its output is passed through, and its last lines kept."""

    def __init__(self, settings: Settings, on_exit: Callable[[], None]) -> None:
        self.proc = subprocess.Popen(
            python_argv(sys.executable, "reprotrain.worker.main"),
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            env={**os.environ, **settings_env(settings)},
            stderr=subprocess.PIPE,
            process_group=0,  # a terminal's Ctrl-C stops `serve`, which then stops its worker
        )
        self.died = self.stopping = False
        self.returncode: int | None = None
        self._last: deque[str] = deque(maxlen=15)
        self._on_exit = on_exit
        threading.Thread(target=self._pump, name="worker-output", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self._last.append(line.rstrip())
            sys.stderr.write(line)
        self.returncode = self.proc.wait()
        if not self.stopping:
            self.died = True
            self._on_exit()

    def tail(self) -> str:
        return "\n".join(self._last) or "(no output)"

    def stop(self) -> None:
        self.stopping = True
        stop(self.proc, 30)


def cmd_worker(args: argparse.Namespace) -> int:
    if args.queues:
        os.environ["REPROTRAIN_QUEUES"] = args.queues
    from reprotrain.worker.main import main

    main([])
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from reprotrain.store.migrate import current, upgrade

    settings = load_settings()
    if args.action == "upgrade":
        upgrade(settings.db_url)
    print(current(settings.db_url) or "(empty database)")
    return 0
