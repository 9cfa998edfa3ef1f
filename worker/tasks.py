"""Celery tasks: one body for every job kind, registered under each kind's task name. Tasks
take ids and re-read state from the database (a redelivered message for a taken job does
nothing)."""

import logging
from typing import Any

from inference.runtime import init_keras
from service.jobs.kinds import JOB_KINDS
from worker.celery_app import app
from worker.context import worker_context
from worker.jobs.lease import worker_id
from worker.jobs.lifecycle import run_job
from worker.presence import announce

log = logging.getLogger(__name__)


def run(self: Any, job_id: str) -> str:
    """Run the job with this id, whatever its kind."""
    init_keras()
    ctx, owner = worker_context(), worker_id(self.request.hostname)
    try:
        announce(ctx, owner)
    except Exception:  # presence is advisory: never let it stop a job
        log.warning("could not announce worker %s", owner, exc_info=True)
    return run_job(ctx, job_id, owner)


TASKS = {
    kind.name: app.task(name=kind.task, bind=True, acks_late=True)(run)
    for kind in JOB_KINDS.values()
}
