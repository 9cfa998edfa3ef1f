"""Data-set domain functions: lookups and storing an upload."""

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.datasets.arrays import Arrays
from service.datasets.schemas import DatasetRow, DatasetRows
from service.errors import Conflict, NotFound
from service.rows import BatchPrediction, Dataset, Job
from service.storage import ArtifactStore
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


def read_rows(arrays: Arrays, offset: int, limit: int) -> DatasetRows:
    """Rows `offset` to `offset + limit` of a data set (memory-mapped: only those are read)."""
    total = len(arrays.y)
    stop = min(total, offset + limit)
    rows = []
    for i in range(offset, stop):
        label = arrays.y[i]
        value = label.tolist() if label.ndim else label.item()
        name = None
        if arrays.class_names is not None and isinstance(value, int):
            name = arrays.class_names[value] if value < len(arrays.class_names) else None
        rows.append(DatasetRow(row=i, x=arrays.X[i].tolist(), label=value, class_name=name))
    return DatasetRows(total=total, offset=offset, rows=rows)


def stored_arrays(store: ArtifactStore, row: Dataset) -> Arrays:
    """An uploaded data set's arrays, memory-mapped."""
    # a memory map stays readable when the cached copy (object storage) is evicted later
    with store.local_file(f"{row.artifact_key}/X.npy") as path:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    with store.local_file(f"{row.artifact_key}/y.npy") as path:
        y = np.load(path, mmap_mode="r", allow_pickle=False)
    return Arrays(X, y, row.class_names)
