"""Job routes: submit, validate, get, list, cancel and the Server-Sent Events stream."""

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select

from service.auth import TenantDep
from service.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from service.jobs import events, progress
from service.jobs import service as jobs
from service.jobs import tensorboard as boards
from service.jobs.schemas import JobRead, ValidateResult
from service.pagination import Page, page
from service.queue import enqueue
from service.quotas import JOB_QUOTA
from service.rows import Job, JobDiagnostics
from service.spec import TrainingSpec
from service.workers.placement import Placement

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
        enqueue(celery, settings, "train", job.id, job.spec.get("resources"))
    return JobRead.of(job, Placement.read(session, settings))


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
def read_job(job_id: str, tenant: TenantDep, session: SessionDep, settings: SettingsDep) -> JobRead:
    """One job (a queued one says which worker it waits for, when none live can take it)."""
    job = jobs.get_job(session, job_id, tenant)
    return JobRead.of(job, Placement.read(session, settings) if job.status == "queued" else None)


@router.get("", response_model=Page)
def list_jobs(
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Page:
    """Jobs, newest first, optionally of one status."""
    filters = [Job.tenant == tenant, *([Job.status == status] if status else [])]
    rows, next_cursor = page(session, Job, limit, cursor, *filters)
    queued = any(r.status == "queued" for r in rows)
    placement = Placement.read(session, settings) if queued else None  # once per page
    return Page(items=[JobRead.of(r, placement) for r in rows], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", status_code=202, response_model=JobRead)
def cancel_job(
    job_id: str, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> JobRead:
    """Cancel a queued job at once, or ask a running one to stop at its next batch."""
    job = jobs.cancel_job(session, job_id, tenant)
    session.commit()
    if job.status == "cancelled":  # a queued job ended here: its streams end now
        progress.publish_status(settings, job.id, job.status)
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
        boards.archive(store, files, job.id),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{job.id}-tensorboard.tar.gz"'},
    )


@router.get("/{job_id}/events")
async def job_events(
    job_id: str,
    tenant: TenantDep,
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events: one `progress` event per epoch, then one `done`."""
    factory = request.app.state.session_factory

    def read() -> Job:
        with factory() as session:
            return jobs.get_job(session, job_id, tenant)

    async def load() -> Job:
        return await anyio.to_thread.run_sync(read)

    first = await load()  # 404 before the stream starts
    hub = progress.hub_of(request.app.state)
    replay = events.Replay(events.resume_from(last_event_id))

    async def stream() -> AsyncIterator[str]:
        if hub is None:
            async for event in events.polled(load, first, replay, request.is_disconnected):
                yield event
            return
        async with hub.follow(job_id) as queue:
            # read again once subscribed: nothing published since `first` is missed
            async for event in events.pushed(load, await load(), replay, queue):
                yield event

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
