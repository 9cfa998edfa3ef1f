"""Job domain functions: they add and flush; the route commits, then enqueues."""

import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.datasets.arrays import describe, load_builtin
from service.errors import Conflict, ErrorDetail, NotFound, SpecInvalid
from service.rows import Dataset, Job, TrainedModel, utcnow
from service.settings import Settings
from service.spec import SPEC_VERSION, TrainingSpec
from service.spec.plan import DatasetMeta, ModelPlan, plan_model
from service.spec.training import BuiltinDataset
from service.storage import ArtifactStore
from service.tenancy import owned
from service.workers.placement import check_resources

TERMINAL = ("succeeded", "failed", "cancelled")


def dataset_meta(
    session: Session, spec: TrainingSpec, tenant: str | None = None
) -> tuple[DatasetMeta, dict[str, Any]]:
    """The shapes a spec is checked against; an unknown dataset.id is a 422 at its loc."""
    ref = spec.dataset
    if isinstance(ref, BuiltinDataset):
        meta = describe(load_builtin(ref.builtin))
        return meta, {"builtin": ref.builtin}
    row = session.scalar(select(Dataset).where(Dataset.id == ref.id, *owned(Dataset, tenant)))
    if row is None:
        raise SpecInvalid([ErrorDetail(("dataset", "id"), "No data set has this id.")])
    meta = DatasetMeta(
        row.n_samples, tuple(row.input_shape), row.task, row.n_classes, row.output_dim
    )
    return meta, {"id": row.id}


def base_model_row(
    session: Session, spec: TrainingSpec, meta: DatasetMeta, tenant: str | None = None
) -> TrainedModel | None:
    """The model named by spec.base_model, checked against the data set's input shape."""
    if spec.base_model is None:
        return None
    from service.models.registry import resolve  # (the registry imports this module)

    loc = ("base_model", "model_id")
    row = resolve(session, spec.base_model.model_id, tenant)
    if row is None:
        raise SpecInvalid([ErrorDetail(loc, "No model has this id.")])
    if tuple(row.input_shape) != tuple(meta.input_shape):
        raise SpecInvalid(
            [
                ErrorDetail(
                    loc,
                    f"Expected a base model that takes rows of shape {list(meta.input_shape)}. "
                    f"Received: a model for rows of shape {row.input_shape}",
                )
            ]
        )
    return row


def plan_spec(
    session: Session, spec: TrainingSpec, settings: Settings, tenant: str | None = None
) -> tuple[ModelPlan, DatasetMeta]:
    meta, _ = dataset_meta(session, spec, tenant)
    check_resources(session, settings, spec.resources)
    base = base_model_row(session, spec, meta, tenant)
    return plan_within_limits(spec, meta, settings, base.summary["layers"] if base else None), meta


def plan_within_limits(
    spec: TrainingSpec,
    meta: DatasetMeta,
    settings: Settings,
    base_layers: list[dict[str, Any]] | None = None,
) -> ModelPlan:
    """The spec's plan under this deployment's bounds (units, layers, epochs)."""
    return plan_model(
        spec,
        meta,
        max_units=settings.max_units,
        max_layers=settings.max_layers,
        max_epochs=settings.max_epochs,
        base_layers=base_layers,
    )


def spec_hash(spec: TrainingSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def create_job(
    session: Session,
    spec: TrainingSpec,
    plan: ModelPlan,
    idempotency_key: str | None,
    tenant: str,
) -> tuple[Job, bool]:
    """Add a queued job; with a known idempotency key, return the first job instead."""
    digest = spec_hash(spec)
    if idempotency_key is not None:
        existing = _idempotent(session, tenant, idempotency_key, digest)
        if existing is not None:
            return existing, False
    try:
        job = new_job(
            session,
            tenant,
            spec.name or "job",
            "train",
            spec.model_dump(mode="json"),
            plan.epochs,
            idempotency_key=idempotency_key,
            request_hash=digest,
        )
    except IntegrityError:  # a concurrent request with the same key won the race
        session.rollback()
        existing = (
            _idempotent(session, tenant, idempotency_key, digest) if idempotency_key else None
        )
        if existing is None:
            raise
        return existing, False
    return job, True


def _idempotent(session: Session, tenant: str, key: str, digest: str) -> Job | None:
    """The job first made with this key (409 when it was made from another body)."""
    existing = session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))
    if existing is not None and existing.request_hash != digest:
        raise Conflict("This Idempotency-Key was used with a different body.")
    return existing


def new_job(
    session: Session,
    tenant: str,
    name: str,
    kind: str,
    spec: dict[str, Any],
    epochs: int,
    **extra: Any,
) -> Job:
    """Add a queued job of any kind (train, optimize, batch_predict) and flush it."""
    job = Job(
        tenant=tenant,
        name=name,
        kind=kind,
        status="queued",
        spec=spec,
        spec_version=SPEC_VERSION,
        epochs=epochs,
        epoch=0,
        history={},
        metrics={},
        attempts=0,
        cancel_requested=False,
        release_requested=False,
        warnings=[],
        enqueued_at=utcnow(),
        **extra,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str, tenant: str | None = None) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, *owned(Job, tenant)))
    if job is None:
        raise NotFound(f"No job has id {job_id[:64]}.")
    return job


def cancel_job(session: Session, job_id: str, tenant: str) -> Job:
    job = get_job(session, job_id, tenant)
    if job.status in TERMINAL:
        raise Conflict(f"The job has already ended ({job.status}).")
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
    job.cancel_requested = True
    session.flush()
    return job


def delete_job(session: Session, store: ArtifactStore, job: Job) -> None:
    """Delete an ended job with its checkpoints, diagnostics and batch results (the model it
    made stays)."""
    if job.status not in TERMINAL:
        raise Conflict(f"The job has not ended ({job.status}): cancel it first.")
    session.delete(job)
    session.flush()
    store.delete_tree(f"jobs/{job.id}")
    store.delete_tree(f"batch_predictions/{job.id}")
    store.delete_tree(f"plots/jobs/{job.id}")
    store.delete_tree(f"plots/batch_predictions/{job.id}")


def pin_base_model(session: Session, spec: TrainingSpec, tenant: str) -> TrainingSpec:
    """A spec whose base_model names the model by id: an alias that moves later must not
    change what a queued job trains from."""
    from service.models.service import get_model

    ref = spec.base_model
    if ref is None or "@" not in ref.model_id:
        return spec
    try:
        model = get_model(session, ref.model_id, tenant)
    except NotFound:
        raise SpecInvalid(
            [ErrorDetail(("base_model", "model_id"), "No model has this reference.")]
        ) from None
    return spec.model_copy(update={"base_model": ref.model_copy(update={"model_id": model.id})})
