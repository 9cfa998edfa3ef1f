"""The Celery configuration shared by the API (which only sends) and the workers.

The API sends tasks by name, so it never imports the worker package or TensorFlow.
"""

import logging
from collections.abc import Mapping
from typing import Any

from celery import Celery

from service.jobs.kinds import JOB_KINDS
from service.queue_redis import is_redis, sender
from service.settings import Settings
from service.spec.resources import MAX_DEVICES, Resources

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


def queue_for(settings: Settings, resources: Mapping[str, Any] | None) -> str:
    """The queue of a job that needs these resources (a job's stored spec["resources"]).

    `any` jobs on one device keep the base queue (KTS_QUEUE), so messages and workers of
    before resources existed still meet; gpu and cpu jobs get `{queue}.gpu` / `{queue}.cpu`;
    N > 1 devices adds `.xN`, which only workers with at least N devices consume.
    """
    asked = Resources.of(resources)
    accelerator, devices = asked.accelerator, asked.devices
    name = settings.queue if accelerator == "any" else f"{settings.queue}.{accelerator}"
    return name if devices == 1 else f"{name}.x{devices}"


def worker_queues(settings: Settings, accelerator: str, devices: int, take_any: bool) -> list[str]:
    """The queues a worker of this accelerator with this many devices consumes."""
    kinds = [accelerator, *(["any"] if take_any else [])]
    counts = range(1, min(devices, MAX_DEVICES) + 1)
    return [queue_for(settings, {"accelerator": a, "devices": n}) for a in kinds for n in counts]


def enqueue(
    app: Celery,
    settings: Settings,
    kind: str,
    job_id: str,
    resources: Mapping[str, Any] | None = None,
) -> bool:
    """Send the task of a committed job of this kind to its resources' queue; False when the
    broker cannot be reached (the job stays queued and the reconciler sends it later)."""
    try:
        queue, url = queue_for(settings, resources), settings.resolved_broker_url()
        if is_redis(url) and not settings.task_events:  # one LPUSH (service/queue_redis.py)
            sender(url).send(app, JOB_KINDS[kind].task, [job_id], queue)
            return True
        app.send_task(  # task-sent events for Flower come with send_task only
            JOB_KINDS[kind].task,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2},
        )
        return True
    except Exception:  # the job stays queued in the database
        log.exception("could not enqueue job %s", job_id)
        return False
