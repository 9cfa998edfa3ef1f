"""The OpenAPI document that generated clients can trust.

FastAPI's generated schema is post-processed once, at the app level (the routes stay as they
are): the real error body (`ErrorResponse`) on every 4xx/5xx an operation can answer, the bearer
key scheme on every route that takes a tenant, a schema for each 2xx that FastAPI cannot infer
(hand-built JSON, the SSE stream, file downloads, typed list pages), and the examples of
examples/*.json on the training-spec request body.
"""

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from service.auth import TenantDep
from service.deps import SessionDep

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
REF = "#/components/schemas/"
_TENANT = get_args(TenantDep)[1].dependency
_SESSION = get_args(SessionDep)[1].dependency

# --- Response shapes that the routes build by hand --------------------------------------------


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Path of the offending field in the request.")
    msg: str = Field(description="What was expected there.")


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable: validation_error, not_found, conflict, ...")
    message: str = Field(description="For people; never echoes the request's values.")
    details: list[ErrorDetail] = Field(description="One per offending field; may be empty.")


class ErrorResponse(BaseModel):
    """Every error answer of the service."""

    error: ErrorBody


Outputs = list[float | None]  # a non-finite output is answered as null


class PredictionInterval(BaseModel):
    level: float = Field(description="The requested interval, e.g. 0.9.")
    lower: Outputs
    upper: Outputs


class McPrediction(BaseModel):
    """Monte-Carlo-Dropout statistics of one instance."""

    model_config = ConfigDict(populate_by_name=True)

    mean: Outputs
    std: Outputs
    class_: int | None = Field(None, alias="class", description="Classifiers: the argmax.")
    predictive_entropy: float | None = Field(None, description="Classifiers only.")
    mutual_information: float | None = Field(None, description="Classifiers only.")
    interval: PredictionInterval | None = Field(None, description="Regression with interval.")
    samples: list[Outputs] | None = Field(None, description="With return_samples: the draws.")


class PredictResponse(BaseModel):
    predictions: list[Outputs | McPrediction] = Field(
        description="Per instance: the model's outputs (mc_samples 0), or MC statistics."
    )
    mc_samples: int
    model_id: str


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class BatchProgress(BaseModel):
    rows_done: int
    rows: int


class BatchPrediction(BaseModel):
    """The batch-prediction object (its job has the same id, kind batch_predict)."""

    id: str
    model_id: str
    dataset_id: str
    status: JobStatus
    progress: BatchProgress
    mc_samples: int
    seed: int | None
    interval: float | None
    summary: dict[str, Any] | None = Field(description="Null until the job has succeeded.")
    error: dict[str, str] | None = Field(description="{code, message} of a failed job.")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BatchPredictionResults(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="One record per data-set row: row, then prediction (plain) or mean, std "
        "and the uncertainty measures (Monte-Carlo)."
    )
    offset: int
    limit: int
    total: int = Field(description="Rows in all.")


class GradientFlag(BaseModel):
    code: str = Field(description="vanishing_gradients, exploding_gradients, engine_fallback")
    epoch: int | None = None
    ratio: float | None = Field(None, description="First to last dense layer's gradient norm.")
    message: str


class LayerHealth(BaseModel):
    name: str
    class_name: str
    activation: str | None
    gradient_norm: float | None
    gradient_finite: bool
    weight_norm: float | None
    activation_mean: float | None
    activation_std: float | None
    saturated_fraction: float | None = Field(description="Sigmoid and tanh layers, else null.")
    dead_fraction: float | None = Field(description="ReLU layers, else null.")


class DiagnosticsEpoch(BaseModel):
    epoch: int
    layers: list[LayerHealth]
    flags: list[GradientFlag]


class Diagnostics(BaseModel):
    job_id: str
    status: JobStatus
    flags: list[GradientFlag] = Field(description="The job's warnings.")
    epochs: list[DiagnosticsEpoch]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='database, broker, artifacts: "ok" or why not.')


SHAPES: tuple[type[BaseModel], ...] = (
    ErrorResponse,
    PredictResponse,
    BatchPrediction,
    BatchPredictionResults,
    Diagnostics,
    Health,
    Readiness,
)

# --- What each operation answers --------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF + name}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ATTACHMENT = {
    "Content-Disposition": {
        "description": "attachment; filename=... (set on file downloads)",
        "schema": {"type": "string"},
    }
}
_EVENTS = (
    "Server-Sent Events (text/event-stream): one `progress` event per epoch run, data "
    '`{"job_id", "epoch", "epochs", "status", "metrics"}`; then one `done` event whose data is '
    "the job object, and the stream closes. A stream opened late replays the epochs already "
    "run; a `: keep-alive` comment comes about every 15 s."
)
SUCCESS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("get", "/healthz"): ("The process answers.", _json("Health")),
    ("get", "/readyz"): ("Every check is ok.", _json("Readiness")),
    ("get", "/v1/jobs/{job_id}/diagnostics"): ("Gradient health.", _json("Diagnostics")),
    ("get", "/v1/jobs/{job_id}/events"): (
        _EVENTS,
        {"text/event-stream": {"schema": {"type": "string"}}},
    ),
    ("get", "/v1/models/{model_id}/artifact"): (
        "The model file: a .keras or SavedModel zip (application/zip) or a TFLite flatbuffer "
        "(application/octet-stream).",
        {"application/zip": _BINARY, "application/octet-stream": _BINARY},
    ),
    ("post", "/v1/models/{model_id}/predict"): ("The predictions.", _json("PredictResponse")),
    ("post", "/v1/models/{model_id}/batch-predictions"): ("Queued.", _json("BatchPrediction")),
    ("get", "/v1/batch-predictions/{batch_id}"): ("The batch prediction.", _json("BatchPrediction")),
    ("post", "/v1/batch-predictions/{batch_id}/cancel"): (
        "Cancelled, or asked to stop.",
        _json("BatchPrediction"),
    ),
    ("get", "/v1/batch-predictions/{batch_id}/results"): (
        "format=json: one page of records; csv: the CSV file; parquet: the Parquet file.",
        {
            **_json("BatchPredictionResults"),
            "text/csv": {"schema": {"type": "string"}},
            "application/octet-stream": _BINARY,
        },
    ),
}
FILES = {"/v1/models/{model_id}/artifact", "/v1/batch-predictions/{batch_id}/results"}

ERRORS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "400": ("The body is not valid JSON (`invalid_json`); the message says where.", None),
    "401": (
        "An API key is required and missing, unknown or revoked (`unauthorized`).",
        ("WWW-Authenticate", "Bearer"),
    ),
    "404": ("No such id for this tenant (`not_found`).", None),
    "409": (
        "Conflicts with the current state (`conflict`): it has ended, is in use or not ready, "
        "or an Idempotency-Key was reused with another body.",
        None,
    ),
    "413": ("The upload is too large (`payload_too_large`).", None),
    "422": (
        "A field is unknown, missing or out of bounds, or the request cannot be served as asked "
        "(`validation_error`; `invalid_body` for JSON that is not an object). "
        "`details[].loc` names each offending field.",
        None,
    ),
    "503": (
        "The database is unavailable (`unavailable`); retry, nothing was lost.",
        ("Retry-After", "Seconds to wait before retrying (5)."),
    ),
}
TOO_LARGE = {("post", "/v1/datasets")}
