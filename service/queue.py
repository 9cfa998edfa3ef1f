"""The Celery configuration shared by the API (which only sends) and the workers.

The API sends tasks by name, so it never imports the worker package or TensorFlow.
"""

import logging

from celery import Celery

from service.jobs.kinds import JOB_KINDS
from service.settings import Settings

log = logging.getLogger(__name__)


def make_celery(settings: Settings) -> Celery:
    app = Celery("kts", broker=settings.resolved_broker_url())
    transport_options: dict[str, object] = {}
    if settings.is_embedded_broker():
        folder = settings.broker_folder()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu writes its exchange table here; its default is `control/` in the working
            # directory, which would litter wherever `kts` was started.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": settings.broker_polling_interval,
        }
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        worker_hijack_root_logger=False,
        # task events for monitors such as Flower: off unless asked (they cost a message each)
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
    )
    return app


def enqueue(app: Celery, settings: Settings, kind: str, job_id: str) -> bool:
    """Send the task of a committed job of this kind; False when the broker cannot be reached
    (the job stays queued in the database and the reconciler sends it later)."""
    try:
        app.send_task(
            JOB_KINDS[kind].task,
            args=[job_id],
            queue=settings.queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2},
        )
        return True
    except Exception:  # the job stays queued in the database
        log.exception("could not enqueue job %s", job_id)
        return False
