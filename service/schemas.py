"""API request and response shapes (separate from the ORM rows in service/models.py)."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.rows import Dataset, Job, TrainedModel


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
        return cls(
            id=row.id,
            name=row.name,
            n_samples=row.n_samples,
            input_shape=row.input_shape,
            n_classes=row.n_classes,
            task=row.task,
            class_names=row.class_names,
            created_at=row.created_at,
        )


class Progress(BaseModel):
    epoch: int
    epochs: int


class JobRead(BaseModel):
    id: str
    name: str
    kind: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    history: dict[str, list[float | None]]
    metrics: dict[str, float | None]
    error: dict[str, str] | None
    model_id: str | None
    attempts: int
    resumed_from_epoch: int | None
    warnings: list[dict[str, Any]]
    spec_version: int
    spec: dict[str, Any]

    @classmethod
    def of(cls, row: Job) -> "JobRead":
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            status=row.status,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            progress=Progress(epoch=row.epoch, epochs=row.epochs),
            history=row.history or {},
            metrics=row.metrics or {},
            error=row.error,
            model_id=row.model_id,
            attempts=row.attempts,
            resumed_from_epoch=row.resumed_from_epoch,
            warnings=row.warnings or [],
            spec_version=row.spec_version,
            spec=row.spec,
        )


class ModelRead(BaseModel):
    id: str
    job_id: str | None
    backend: str
    created_at: datetime
    summary: dict[str, Any]
    metrics: dict[str, float | None]
    base_model_id: str | None
    uncertainty: dict[str, Any] | None
    pruning: dict[str, Any] | None
    optimization: dict[str, Any] | None
    task: str
    n_classes: int | None
    input_shape: list[int]

    @classmethod
    def of(cls, row: TrainedModel) -> "ModelRead":
        return cls(
            id=row.id,
            job_id=row.job_id,
            backend=row.backend,
            created_at=row.created_at,
            summary=row.summary,
            metrics=row.metrics or {},
            base_model_id=row.base_model_id,
            uncertainty=row.uncertainty,
            pruning=row.pruning,
            optimization=row.optimization,
            task=row.task,
            n_classes=row.n_classes,
            input_shape=row.input_shape,
        )


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None


class ValidateResult(BaseModel):
    valid: bool = True
    summary: dict[str, Any]
    loss: str
    metrics: list[str]
    epochs: int
    dataset: dict[str, Any]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Any] = Field(min_length=1, description="Rows, as TensorFlow Serving takes.")
    mc_samples: int = Field(0, ge=0, description="Monte-Carlo-Dropout samples; 0 = plain.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Makes MC answers repeatable.")
    return_samples: bool = Field(False, description="Also return the raw draws per instance.")
    interval: float | None = Field(
        None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Regression: central interval of the MC samples (0.9: 5% and 95% quantiles).",
    )
