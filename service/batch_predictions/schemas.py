"""Batch-prediction request shapes, and the spec its job stores."""

from typing import Literal

from pydantic import Field

from service.spec.common import FiniteFloat, Strict
from service.spec.resources import OneDeviceResources
from service.spec.training import DatasetRef


class BatchPredictionCreate(Strict):
    dataset: DatasetRef = Field(description='{"id": DATASET_ID}: the rows to score.')
    mc_samples: int = Field(0, ge=0, description="Monte-Carlo-Dropout samples per row; 0 = plain.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Makes the draws repeatable.")
    interval: FiniteFloat | None = Field(
        None, gt=0, lt=1, description="Regression: central interval of the MC samples."
    )
    resources: OneDeviceResources = Field(
        default_factory=lambda: OneDeviceResources(),
        description='Which workers may run it: {"accelerator": "gpu" | "cpu" | "any"}.',
    )


class BatchPredictionJobSpec(BatchPredictionCreate):
    """What a batch_predict job stores as its spec: the request and the model it scores."""

    model_id: str = Field(max_length=64, description="The model that scores the rows.")


ResultFormat = Literal["json", "csv", "parquet"]
