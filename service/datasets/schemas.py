"""Data-set request and response shapes (the ORM row is service/rows.py's Dataset)."""

from datetime import datetime

from pydantic import BaseModel

from service.rows import Dataset


class DatasetRead(BaseModel):
    id: str
    name: str
    n_samples: int
    input_shape: list[int]
    n_classes: int | None
    task: str
    class_names: list[str] | None = None
    created_at: datetime

    @classmethod
    def of(cls, row: Dataset) -> "DatasetRead":
        return cls.model_validate(row, from_attributes=True)
