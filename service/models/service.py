"""Trained-model domain functions: lookups, lineage, and the checks of a sampling request
that /predict and batch predictions share."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import ErrorDetail, NotFound, SpecInvalid
from service.jobs.service import new_job
from service.models import registry
from service.models.compression import CompressionRequest, fold_plan, keras_layers
from service.models.schemas import PredictOptions
from service.rows import Job, TrainedModel
from service.settings import Settings
from service.storage import ArtifactStore


def get_model(session: Session, ref: str, tenant: str | None = None) -> TrainedModel:
    """A model by id, NAME@ALIAS, NAME@VERSION or NAME@latest (404 when none)."""
    row = registry.resolve(session, ref, tenant)
    if row is None:
        kind = "id" if "@" not in ref else "reference"
        raise NotFound(f"No model has {kind} {ref[:100]}.")
    return row


def training_job_of(session: Session, model: TrainedModel) -> Job | None:
    """The training job whose data a model (or the model it was derived from) learned on."""
    seen = set()
    row: TrainedModel | None = model
    while row is not None and row.id not in seen:
        seen.add(row.id)
        if row.job_id is not None:
            job = session.scalar(select(Job).where(Job.id == row.job_id))
            if job is not None and job.kind == "train":
                return job
        if row.base_model_id is None:
            return None
        row = session.scalar(select(TrainedModel).where(TrainedModel.id == row.base_model_id))
    return None


def check_sampling(
    model: TrainedModel,
    settings: Settings,
    mc_samples: int,
    interval: float | None,
    return_samples: bool = False,
) -> None:
    """What /predict and batch predictions both refuse before any work: too many samples,
    sampling a model without dropout, options that need sampling or a regression model."""
    if mc_samples > settings.max_mc_samples:
        raise _invalid("mc_samples", f"Expected at most {settings.max_mc_samples} samples.")
    if mc_samples > 0 and not model.has_dropout:
        raise _invalid(
            "mc_samples",
            "This model has no dropout layers, so Monte-Carlo Dropout has nothing to sample: "
            "ask for mc_samples 0.",
        )
    if interval is not None and model.task != "regression":
        raise _invalid(
            "interval",
            "Expected interval for regression models only; classifiers report entropy.",
        )
    if (return_samples or interval is not None) and mc_samples == 0:
        field = "return_samples" if return_samples else "interval"
        raise _invalid(field, "Expected mc_samples > 0 with this option.")


def _invalid(field: str, message: str) -> SpecInvalid:
    return SpecInvalid([ErrorDetail((field,), message)])


def check_predict(
    model: TrainedModel, settings: Settings, body: PredictOptions, instances: int
) -> None:
    """A predict request's bounds, checked before any Keras work."""
    if instances > settings.max_instances:
        raise _invalid("instances", f"Expected at most {settings.max_instances} instances.")
    check_sampling(model, settings, body.mc_samples, body.interval, body.return_samples)
    outputs = model.n_classes or int(model.summary["layers"][-1]["output_shape"][-1] or 1)
    returned = instances * body.mc_samples * outputs
    if body.return_samples and returned > settings.max_returned_samples:
        raise _invalid(
            "return_samples",
            "Expected instances x mc_samples x outputs at most "
            f"{settings.max_returned_samples} with return_samples (the answer's size).",
        )
    if returned > settings.max_mc_values:
        raise _invalid(
            "mc_samples",
            f"Expected instances x mc_samples x outputs at most {settings.max_mc_values}.",
        )


def create_compression_job(
    session: Session,
    store: ArtifactStore,
    model: TrainedModel,
    body: CompressionRequest,
    tenant: str,
) -> Job:
    """Add an optimize job, after the checks that need no Keras (a fold plan exists, the
    training rows are known for pruning)."""
    if body.fold_batch_norm:
        with store.local_file(model.artifact_key) as path:
            fold_plan(keras_layers(path))
    if body.prune is not None and training_job_of(session, model) is None:
        raise _invalid("prune", "No training rows are known for this model.")
    return new_job(
        session,
        tenant,
        f"optimize {model.id}",
        "optimize",
        {"source_model_id": model.id, **body.model_dump(mode="json")},
        body.prune.epochs if body.prune else 1,
    )
