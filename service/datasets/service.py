"""Data-set domain functions: lookups and storing an upload."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.rows import Dataset
from service.tenancy import owned


def get_dataset(session: Session, dataset_id: str, tenant: str | None = None) -> Dataset:
    row = session.scalar(select(Dataset).where(Dataset.id == dataset_id, *owned(Dataset, tenant)))
    if row is None:
        raise NotFound(f"No data set has id {dataset_id[:64]}.")
    return row
