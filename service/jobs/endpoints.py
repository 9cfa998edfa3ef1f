"""Job routes: submit, validate, get, list, cancel and the Server-Sent Events stream."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from service.auth import TenantDep
from service.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from service.jobs import service as jobs
from service.jobs import tensorboard as boards
from service.jobs.schemas import JobRead, ValidateResult
from service.pagination import Page, page
from service.queue import enqueue
from service.quotas import JOB_QUOTA
from service.rows import Job, JobDiagnostics
from service.spec import TrainingSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post("", status_code=202, response_model=JobRead, dependencies=[JOB_QUOTA])
def submit_job(
    spec: TrainingSpec,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobRead:
    """Queue a training job; the spec is checked against its data set first."""
    spec = jobs.pin_base_model(session, spec, tenant)
    plan, _ = jobs.plan_spec(session, spec, settings, tenant)
    job, created = jobs.create_job(session, spec, plan, idempotency_key, tenant)
    session.commit()
    if created:
        enqueue(celery, settings, "train", job.id)
    return JobRead.of(job)


@router.post("/validate", response_model=ValidateResult)
def validate_job(
    spec: TrainingSpec, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> ValidateResult:
    """Check a spec without queueing it; answers the summary of the model it would build."""
    plan, meta = jobs.plan_spec(session, spec, settings, tenant)
    return ValidateResult(
        summary=plan.summary(),
        loss=plan.loss,
        metrics=plan.metrics,
        epochs=plan.epochs,
        dataset={
            "n_samples": meta.n_samples,
            "input_shape": list(meta.input_shape),
            "task": meta.task,
            "n_classes": meta.n_classes,
        },
    )


@router.get("/{job_id}", response_model=JobRead)
def read_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JobRead:
    """One job."""
    return JobRead.of(jobs.get_job(session, job_id, tenant))


@router.get("", response_model=Page)
def list_jobs(
    tenant: TenantDep,
    session: SessionDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Page:
    """Jobs, newest first, optionally of one status."""
    filters = [Job.tenant == tenant, *([Job.status == status] if status else [])]
    rows, next_cursor = page(session, Job, limit, cursor, *filters)
    return Page(items=[JobRead.of(r) for r in rows], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobRead)
def cancel_job(job_id: str, tenant: TenantDep, session: SessionDep) -> JobRead:
    """Cancel a queued job at once, or ask a running one to stop at its next batch."""
    job = jobs.cancel_job(session, job_id, tenant)
    session.commit()
    return JobRead.of(job)


@router.get("/{job_id}/diagnostics")
def job_diagnostics(job_id: str, tenant: TenantDep, session: SessionDep) -> dict[str, Any]:
    """Gradient health per epoch and layer, with vanishing/exploding flags and hints."""
    job = jobs.get_job(session, job_id, tenant)
    rows = session.scalars(
        select(JobDiagnostics).where(JobDiagnostics.job_id == job.id).order_by(JobDiagnostics.epoch)
    )
    return {
        "job_id": job.id,
        "status": job.status,
        "flags": job.warnings or [],
        "epochs": [{"epoch": r.epoch, "layers": r.layers, "flags": r.flags} for r in rows],
    }


@router.get("/{job_id}/tensorboard")
def job_tensorboard(
    job_id: str, tenant: TenantDep, session: SessionDep, store: StoreDep
) -> StreamingResponse:
    """The job's TensorBoard event files as a .tar.gz (404 when it has written none)."""
    job = jobs.get_job(session, job_id, tenant)
    files = boards.event_files(store, job.id)
    return StreamingResponse(
        boards.archive(files, job.id),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-tensorboard.tar.gz"'},
    )


def _sse(event: str, data: dict[str, Any], event_id: int | str) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _resume_from(last_event_id: str | None) -> int:
    """Epochs a reconnecting client already has (its Last-Event-ID is the last epoch)."""
    if last_event_id is None or not last_event_id.isdigit() or len(last_event_id) > 9:
        return 0
    return int(last_event_id)


def _epoch_metrics(history: dict[str, list[Any]], epoch: int) -> dict[str, Any]:
    return {k: v[epoch] for k, v in history.items() if len(v) > epoch}


@router.get("/{job_id}/events")
async def job_events(
    job_id: str,
    tenant: TenantDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events: one `progress` event per epoch, then one `done`."""
    factory = request.app.state.session_factory

    def load() -> Job:
        with factory() as session:
            return jobs.get_job(session, job_id, tenant)

    first = await anyio.to_thread.run_sync(load)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        sent = _resume_from(last_event_id)
        job = first
        last_beat = time.monotonic()
        while True:
            epochs_done = len(job.history.get("loss", [])) if job.history else 0
            while sent < epochs_done:
                yield _sse(
                    "progress",
                    {
                        "job_id": job.id,
                        "epoch": sent + 1,
                        "epochs": job.epochs,
                        "status": job.status,
                        "metrics": _epoch_metrics(job.history, sent),
                    },
                    sent + 1,
                )
                sent += 1
            if job.status in jobs.TERMINAL:
                yield _sse("done", JobRead.of(job).model_dump(mode="json"), sent)
                return
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(0.25)
            if await request.is_disconnected():
                return
            job = await anyio.to_thread.run_sync(load)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, tenant: TenantDep, session: SessionDep, store: StoreDep) -> Response:
    """Delete an ended job with its checkpoints and results (409 while it runs)."""
    jobs.delete_job(session, store, jobs.get_job(session, job_id, tenant))
    session.commit()
    return Response(status_code=204)
