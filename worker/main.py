"""Worker entry point: `python -m reprotrain.worker.main` (or `celery -A reprotrain.worker.main worker`).

Runs one job at a time (solo pool: one worker process per GPU), consuming the queues in
REPROTRAIN_QUEUES. Reads the environment here, at the edge, and nowhere else.
"""

from __future__ import annotations

import os
import socket
import sys

from celery import Celery
from celery.signals import worker_shutdown

from reprotrain.broker import consume, create_celery
from reprotrain.settings import Settings, load_settings
from reprotrain.worker.task import Runtime, handle, make_runtime


def build(settings: Settings) -> tuple[Celery, dict[str, Runtime]]:
    app = create_celery(settings)
    holder: dict[str, Runtime] = {}

    def runtime() -> Runtime:
        if "rt" not in holder:
            holder["rt"] = make_runtime(settings)
        return holder["rt"]

    def run_job(job_id: str) -> str:
        return handle(runtime(), job_id)

    consume(app, run_job)

    @worker_shutdown.connect(weak=False)
    def _close(**_: object) -> None:
        if "rt" in holder:
            holder.pop("rt").close()

    return app, holder


settings = load_settings()
app, _runtime = build(settings)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    app.worker_main(
        [
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
