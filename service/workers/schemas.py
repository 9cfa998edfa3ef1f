"""Worker response shapes."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class WorkerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    node: str = Field(description="Celery node and process id: the lease owner name of its jobs.")
    backend: str = Field(description="Keras backend the process trains and predicts with.")
    devices: list[str] = Field(description="Devices the process sees, e.g. gpu:0 or cpu:0.")
    started_at: datetime
    last_seen: datetime


class WorkerList(BaseModel):
    items: list[WorkerRead]
