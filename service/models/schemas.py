"""Trained-model request and response shapes."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.plots.catalog import model_plots
from service.rows import TrainedModel


class ModelRead(BaseModel):
    id: str
    name: str
    version: int
    aliases: list[str]
    tags: dict[str, str]
    class_names: list[str] | None
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
    plots: list[str] = Field(
        default_factory=list, description="Plot names available now (GET .../plots/{name})."
    )

    @classmethod
    def of(cls, row: TrainedModel) -> "ModelRead":
        read = cls.model_validate(row, from_attributes=True)
        read.plots = model_plots(row)
        return read


class PredictOptions(BaseModel):
    """How to predict; with a binary body (application/x-npy) these come as query parameters."""

    model_config = ConfigDict(extra="forbid")

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


class PredictRequest(PredictOptions):
    """The JSON body of /predict."""

    instances: list[Any] = Field(min_length=1, description="Rows, as TensorFlow Serving takes.")


TagKey = Annotated[str, StringConstraints(min_length=1, max_length=100)]
TagValue = Annotated[str, StringConstraints(max_length=500)]


class TagsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: dict[TagKey, TagValue] = Field(
        max_length=50, description="All the model's tags (replaces the earlier ones)."
    )
