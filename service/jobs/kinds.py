"""Job kinds, registered once: the kind's name, the class its stored spec validates against,
and the Celery task that runs it. The worker registers one runner per kind
(worker/jobs/lifecycle.py), under the same name; a test checks both agree.
"""

from dataclasses import dataclass

from pydantic import BaseModel

from service.batch_predictions.schemas import BatchPredictionJobSpec
from service.models.compression import CompressionJobSpec
from service.spec import TrainingSpec


@dataclass(frozen=True)
class JobKind:
    name: str
    spec: type[BaseModel]
    task: str  # Celery task name (the API sends tasks by name, never importing the worker)


JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("train", TrainingSpec, "kts.train"),
        JobKind("optimize", CompressionJobSpec, "kts.optimize"),
        JobKind("batch_predict", BatchPredictionJobSpec, "kts.batch_predict"),
    )
}
