"""Worker response shapes."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class WorkerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    node: str = Field(description="Celery node and process id: the lease owner name of its jobs.")
    backend: str = Field(description="Keras backend the process trains and predicts with.")
    devices: list[str] = Field(description="Devices the process sees, e.g. gpu:0 or cpu:0.")
    accelerator: str | None = Field(
        None, description="gpu or cpu: the kind of jobs it takes (null: an older worker)."
    )
    device_count: int | None = Field(
        None, description="Devices one job can train on here (data parallel, JAX backend)."
    )
    queues: list[str] = Field(
        default_factory=list, description="The queues it consumes (one per accelerator and count)."
    )
    started_at: datetime
    last_seen: datetime

    @field_validator("queues", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # stored comma-joined (service/rows.py), so that the API can group workers by it
        if value is None:
            return []
        return value.split(",") if isinstance(value, str) else value


class WorkerList(BaseModel):
    items: list[WorkerRead]
