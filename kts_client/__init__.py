"""Python client of the Keras Training Service: `Client` (sync) and `AsyncClient` (async).

    from kts_client import Client
    with Client() as kts:  # KTS_URL / KTS_API_KEY, else http://127.0.0.1:8000
        job = kts.submit("spec.json")
        for event in kts.follow(job.id):
            print(event)
        model_id = kts.wait(job.id).model_id
        print(kts.predict(model_id, X, mc_samples=100).std)

Requests and answers are the service's own pydantic models (TrainingSpec, JobRead, ModelRead,
DatasetRead, ...); importing this package never imports Keras.
"""

from kts_client._ops import Page
from kts_client.aio import AsyncClient
from kts_client.client import Client
from kts_client.errors import (
    ApiError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from kts_client.events import DoneEvent, JobEvent, ProgressEvent
from kts_client.prediction import Prediction
from service.datasets.schemas import DatasetRead
from service.jobs.schemas import JobRead, ValidateResult
from service.models.schemas import ModelRead
from service.spec import TrainingSpec

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "DatasetRead",
    "DoneEvent",
    "JobEvent",
    "JobRead",
    "ModelRead",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "Prediction",
    "ProgressEvent",
    "TrainingSpec",
    "Unauthorized",
    "Unavailable",
    "ValidateResult",
    "ValidationFailed",
]
