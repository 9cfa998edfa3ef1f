"""Data-set request and response shapes (the ORM row is service/rows.py's Dataset)."""

from datetime import datetime
from typing import Any

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


class DatasetRow(BaseModel):
    row: int
    x: list[Any]  # nested as the data set's input shape
    label: int | float | list[float]
    class_name: str | None = None


class DatasetRows(BaseModel):
    total: int
    offset: int
    rows: list[DatasetRow]
