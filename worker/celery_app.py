"""The Celery app factory, shared by the API (to send) and the workers (to run).

Delivery settings follow DESIGN: late acks, re-delivery when a worker dies, one message at a time,
JSON only. The database, not the broker, says what a job is: the task carries only its id.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from reprotrain.settings import Settings

TASK = "reprotrain.run_job"


def broker_options(settings: Settings) -> dict[str, object]:
    if settings.broker.startswith("filesystem"):
        queue = settings.broker_dir / "queue"
        processed = settings.broker_dir / "processed"
        control = settings.broker_dir / "control"  # kombu's default is ./control in the cwd
        for d in (queue, processed, control):
            d.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "control_folder": str(control),
            "store_processed": False,
        }
    # a message not acked within this time is re-delivered; a duplicate cannot claim the job
    return {"visibility_timeout": settings.visibility_timeout_s}


def create_celery(settings: Settings) -> Celery:
    app = Celery("reprotrain", broker=settings.broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_default_queue="default",
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def send_job(app: Celery, job_id: str, queue: str, producer: Any = None) -> None:
    app.send_task(TASK, args=[job_id], queue=queue, producer=producer)
