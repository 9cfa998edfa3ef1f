"""Celery tasks: they take ids and re-read state from the database."""

from typing import Any

from inference.runtime import init_keras
from worker.celery_app import app
from worker.context import worker_context
from worker.lease import worker_id
from worker.runner import run_job


@app.task(name="kts.train", bind=True, acks_late=True)
def train(self: Any, job_id: str) -> str:
    """Train the job with this id (a redelivered message for a taken job does nothing)."""
    init_keras()
    return run_job(worker_context(), job_id, worker_id(self.request.hostname))


@app.task(name="kts.optimize", bind=True, acks_late=True)
def optimize(self: Any, job_id: str) -> str:
    """Derive a new model for the optimize job with this id."""
    init_keras()
    return run_job(worker_context(), job_id, worker_id(self.request.hostname))


@app.task(name="kts.batch_predict", bind=True, acks_late=True)
def batch_predict(self: Any, job_id: str) -> str:
    """Score the data set of the batch prediction with this id."""
    init_keras()
    return run_job(worker_context(), job_id, worker_id(self.request.hostname))
