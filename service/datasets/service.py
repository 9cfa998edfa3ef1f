"""Data-set domain functions: lookups and storing an upload."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.artifacts import ArtifactStore
from service.errors import Conflict, NotFound
from service.rows import BatchPrediction, Dataset, Job
from service.tenancy import owned


def get_dataset(session: Session, dataset_id: str, tenant: str | None = None) -> Dataset:
    row = session.scalar(select(Dataset).where(Dataset.id == dataset_id, *owned(Dataset, tenant)))
    if row is None:
        raise NotFound(f"No data set has id {dataset_id[:64]}.")
    return row


def delete_dataset(session: Session, store: ArtifactStore, row: Dataset) -> None:
    """Delete a data set and its files (409 while a queued or running job uses it)."""
    open_jobs = session.scalars(
        select(Job).where(Job.tenant == row.tenant, Job.status.in_(("queued", "running")))
    )
    for job in open_jobs:
        spec = job.spec or {}
        used = (spec.get("dataset") or {}).get("id") == row.id
        if used or (job.kind == "batch_predict" and _batch_dataset(session, job.id) == row.id):
            raise Conflict(f"The data set is in use: {job.kind} job {job.id} is {job.status}.")
    session.delete(row)
    session.flush()
    store.delete_tree(row.artifact_key)


def _batch_dataset(session: Session, batch_id: str) -> str | None:
    return session.scalar(select(BatchPrediction.dataset_id).where(BatchPrediction.id == batch_id))
