"""Worker entry point: `reprotrain worker` or `python -m reprotrain.worker.main`.

Runs one job at a time (solo pool: one worker process per GPU), consuming the queues in
REPROTRAIN_QUEUES. Reads the environment in `main`, at the edge, and nowhere else.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from typing import Any

from celery import Celery
from celery.exceptions import SecurityWarning
from celery.signals import setup_logging, worker_ready, worker_shutdown

from reprotrain import joblog
from reprotrain.broker import consume, create_celery
from reprotrain.settings import Settings, load_settings
from reprotrain.worker.presence import Presence, own_queues, worker_id
from reprotrain.worker.task import handle, make_runtime


def create_worker(settings: Settings) -> Celery:
    """The Celery app of one worker: the job task, and a runtime (store, fork server) made on first use."""
    app = create_celery(settings)
    holder: dict[str, Any] = {}
    owner = worker_id()

    def run_job(job_id: str) -> str:
        if "rt" not in holder:  # the fork server starts in the worker process, not at import
            holder["rt"] = make_runtime(settings, owner=owner)
        return handle(holder["rt"], job_id)

    @worker_ready.connect(weak=False)
    def _present(sender: Any = None, **_: object) -> None:
        # the fork server starts now, not with the first job: its reading of the static environment
        # (and the CUDA probe's) names the queues of this worker's environments, where reruns and
        # bisect sides are routed
        try:
            holder["rt"] = holder.get("rt") or make_runtime(settings, owner=owner)
            for queue in own_queues(holder["rt"].get_runner()) if sender is not None else []:
                sender.add_task_queue(queue)
        except Exception:
            logging.getLogger("reprotrain.worker").exception(
                "this worker's environment queue is not consumed"
            )
        holder["presence"] = Presence(settings, owner, lambda: holder.get("rt"))
        holder["presence"].start()

    consume(app, run_job)

    @setup_logging.connect(weak=False)
    def _logging(**_: object) -> None:  # connected: Celery leaves logging to us
        joblog.configure(settings.log_format)
        for name in ("celery.app.trace", "celery.worker.strategy"):  # task ids are not job ids:
            logging.getLogger(name).setLevel(logging.WARNING)  # our job events say it instead

    @worker_shutdown.connect(weak=False)
    def _close(**_: object) -> None:
        if "presence" in holder:
            holder.pop("presence").stop()
        if "rt" in holder:
            holder.pop("rt").close()

    return app


def main(argv: list[str] | None = None) -> None:
    settings = load_settings()
    args = argv if argv is not None else sys.argv[1:]
    # root is expected in a container, and a job never runs as root (README, Security model)
    warnings.filterwarnings("ignore", category=SecurityWarning)
    create_worker(settings).worker_main(
        [
            "--quiet",  # no banner: Celery's one "ready" line says the worker is up
            "worker",
            "--pool",
            "solo",
            "--concurrency",
            "1",
            "-Q",
            ",".join(settings.queues),
            "-n",
            f"reprotrain-{os.getpid()}@{socket.gethostname()}",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            *args,
        ]
    )


if __name__ == "__main__":
    main()
