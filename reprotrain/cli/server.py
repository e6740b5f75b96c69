"""Server commands: `serve` (embedded: API + one worker, no servers to install), `api`, `worker`, `db`."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
from typing import Any

from reprotrain.procs import die_with_parent
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

    from reprotrain.store.migrate import upgrade
    from service.app import create_app

    settings = load_settings(data_dir=args.data_dir, host=args.host, port=args.port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    app = create_app(settings)  # refuses to listen beyond loopback without tokens
    # Everything imported and built so far (FastAPI, SQLAlchemy, Celery, kombu: ~10^5 objects) lives
    # as long as the process. Frozen, the collector stops re-scanning it on every full collection,
    # which per-request garbage triggers often: a quarter of the API's CPU under load.
    gc.collect()
    gc.freeze()
    worker = None
    if not args.no_worker:
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker.main"],
            preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            env={**os.environ, **settings_env(settings)},
        )
    try:
        uvicorn.run(
            app, host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log
        )
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    if args.queues:
        os.environ["REPROTRAIN_QUEUES"] = args.queues
    from worker.main import main

    main([])
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from reprotrain.store.migrate import current, upgrade

    settings = load_settings()
    if args.action == "upgrade":
        upgrade(settings.db_url)
    print(current(settings.db_url) or "(empty database)")
    return 0
