"""Celery tasks: they take ids and re-read state from the database."""

from worker.celery_app import app
from worker.context import worker_context
from worker.runtime import init_keras
from worker.training import run_job


@app.task(name="kts.train", acks_late=True)
def train(job_id: str) -> str:
    """Train the job with this id (a redelivered message for an ended job does nothing)."""
    init_keras()
    return run_job(worker_context(), job_id)


@app.task(name="kts.optimize", acks_late=True)
def optimize(job_id: str) -> str:
    """Derive a new model for the optimize job with this id."""
    init_keras()
    return run_job(worker_context(), job_id)
