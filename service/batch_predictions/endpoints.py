"""Batch-prediction routes: score a stored data set on the workers, then page or download."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from service.auth import TenantDep
from service.batch_predictions import service as batch
from service.batch_predictions.schemas import BatchPredictionCreate, ResultFormat
from service.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from service.jobs.service import cancel_job
from service.models.service import get_model
from service.pagination import page
from service.queue import enqueue
from service.quotas import JOB_QUOTA
from service.rows import BatchPrediction, Job
from service.storage.responses import download

router = APIRouter(tags=["batch predictions"])


@router.post("/v1/models/{model_id}/batch-predictions", status_code=202, dependencies=[JOB_QUOTA])
def create_batch_prediction(
    model_id: str,
    body: BatchPredictionCreate,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> dict[str, Any]:
    """Queue the scoring of a whole stored data set (plain or with MC Dropout)."""
    model = get_model(session, model_id, tenant)
    row = batch.create(session, settings, model, body, tenant)
    session.commit()
    enqueue(celery, settings, "batch_predict", row.id, body.resources.model_dump())
    return batch.read(*batch.get(session, row.id, tenant))


@router.get("/v1/batch-predictions/{batch_id}")
def read_batch_prediction(batch_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """One batch prediction: status, progress, summary."""
    return batch.read(*batch.get(session, batch_id, tenant))


@router.get("/v1/batch-predictions")
def list_batch_predictions(
    tenant: TenantDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Batch predictions, newest first."""
    rows, next_cursor = page(
        session, BatchPrediction, limit, cursor, BatchPrediction.tenant == tenant
    )
    by_id = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_([r.id for r in rows])))}
    return {"items": [batch.read(r, by_id[r.id]) for r in rows], "next_cursor": next_cursor}


@router.post("/v1/batch-predictions/{batch_id}/cancel", status_code=202)
def cancel_batch_prediction(
    batch_id: str, tenant: TenantDep, session: SessionDep
) -> dict[str, Any]:
    """Cancel a queued or running batch prediction (no half results are kept)."""
    batch.get(session, batch_id, tenant)
    cancel_job(session, batch_id, tenant)
    session.commit()
    return batch.read(*batch.get(session, batch_id, tenant))


@router.get("/v1/batch-predictions/{batch_id}/results", response_model=None)
def batch_prediction_results(
    batch_id: str,
    tenant: TenantDep,
    session: SessionDep,
    store: StoreDep,
    format: Annotated[ResultFormat, Query(description="json pages, csv or parquet")] = "json",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    sort: Annotated[
        str | None, Query(max_length=40, description="e.g. -predictive_entropy")
    ] = None,
) -> dict[str, Any] | Response:
    """The stored per-row predictions: JSON pages, or a CSV or Parquet file."""
    row, job = batch.get(session, batch_id, tenant)
    if format == "parquet":
        batch.page(store, row, job, 0, 1, None)  # readiness check
        assert row.results_key is not None
        return download(store, row.results_key, "application/octet-stream", f"{batch_id}.parquet")
    if format == "csv":
        lines = batch.csv_lines(store, row, job)
        first = next(lines)  # errors (not ready) surface before the response starts
        return StreamingResponse(
            iter([first, *lines]),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{batch_id}.csv"'},
        )
    return batch.page(store, row, job, offset, limit, sort)
