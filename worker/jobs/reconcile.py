"""The queue follows the database, which is the source of truth: jobs whose worker died or
whose message was lost are enqueued again; nothing else ever re-sends a job."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from service.jobs.service import TERMINAL
from service.queue import queue_for
from service.rows import Job, Worker, utcnow
from service.settings import Settings
from service.workers.placement import Placement
from worker.context import WorkerContext
from worker.jobs.joblog import JobLog
from worker.jobs.lease import fail_worker_lost


def requeue(ctx: WorkerContext, job_id: str, kind: str = "train", resources: Any = None) -> bool:
    """Send the job's task again (after a hand-back, an expired lease, a lost message), to
    the queue of its resources."""
    from service.queue import enqueue, make_celery

    if ctx.celery is None:
        ctx.celery = make_celery(ctx.settings)
    return enqueue(ctx.celery, ctx.settings, kind, job_id, resources)


Resend = tuple[str, str, Any, bool]  # job id, kind, resources, whether its lease expired


def reconcile(ctx: WorkerContext) -> dict[str, int]:
    """Make the queue match the database, which is the source of truth.

    Running jobs whose lease expired (their worker died) are enqueued again, or fail as
    worker_lost past max_attempts; queued jobs not started for requeue_after_seconds (their
    message was lost, e.g. with a Redis restart) are enqueued again, when a live worker
    consumes their queue. Safe to run anywhere and often: the rows are locked (PostgreSQL:
    SKIP LOCKED), so concurrent rounds on several nodes do not both send a job, and a
    duplicate message finds the job taken and is dropped.
    """
    s, now = ctx.settings, utcnow()
    counts = {"requeued_expired": 0, "requeued_queued": 0, "worker_lost": 0}
    with ctx.session_factory() as session:
        expired = session.scalars(_expired(s, now)).all()
        stale = session.scalars(_stale(s, now)).all()
        taken = _consumed(session, s)
        todo: list[Resend] = []
        lost: list[tuple[str, int]] = []
        for job in expired:
            if job.attempts >= s.max_attempts:
                fail_worker_lost(session, job.id, job.attempts)
                counts["worker_lost"] += 1
                lost.append((job.id, job.attempts))
            elif taken(job):
                todo.append(_resend(job, now))
                counts["requeued_expired"] += 1
        for job in filter(taken, stale):
            todo.append(_resend(job, now))
            counts["requeued_queued"] += 1
        session.commit()
    for job_id, attempts in lost:  # in the jobs' own logs, after the commit (SQLite: one writer)
        JobLog(ctx, job_id).failure("worker_lost", f"its worker was lost {attempts} times")
    for job_id, kind, resources, expired_lease in todo:  # after the commit, as every enqueue
        if expired_lease:
            JobLog(ctx, job_id).warning(
                "lease_expired", "its worker stopped renewing the lease: queued again"
            )
        requeue(ctx, job_id, kind, resources)
    return counts


def _expired(s: Settings, now: datetime) -> Select[Job]:
    """Running jobs whose lease expired and that were not re-sent within a lease."""
    return (
        select(Job)
        .where(
            Job.status == "running",
            Job.lease_expires_at < now,
            or_(
                Job.enqueued_at.is_(None),
                Job.enqueued_at < now - timedelta(seconds=s.lease_seconds),
            ),
        )
        .with_for_update(skip_locked=True)  # (SQLite, one writer, has no such clause)
    )


def _stale(s: Settings, now: datetime) -> Select[Job]:
    """Queued jobs not started (nor re-sent) for requeue_after_seconds."""
    return (
        select(Job)
        .where(
            Job.status == "queued",
            or_(
                Job.enqueued_at.is_(None),
                Job.enqueued_at < now - timedelta(seconds=s.requeue_after_seconds),
            ),
        )
        .with_for_update(skip_locked=True)
    )


def _consumed(session: Session, s: Settings) -> Callable[[Job], bool]:
    """Whether a live worker consumes a job's queue. A job no live worker takes (kts.gpu
    with no GPU worker) is not sent again: each round would add a message to a list nobody
    pops. With no worker ever announced (an embedded first start), every job is sent."""
    if session.scalar(select(Worker.node).limit(1)) is None:
        return lambda _job: True
    live = Placement.read(session, s).live_queues
    return lambda job: queue_for(s, job.spec.get("resources")) in live


def _resend(job: Job, now: datetime) -> Resend:
    job.enqueued_at = now
    return job.id, job.kind, job.spec.get("resources"), job.status == "running"


RETENTION_BATCH = 500  # jobs pruned per reconciler round, so a round stays short


def apply_retention(ctx: WorkerContext) -> int:
    """Remove what ended jobs no longer need once they are older than the retention: the
    checkpoints of every ended job, and the partial artifacts of failed and cancelled ones
    (succeeded batch results and models stay). Returns the number of jobs pruned."""
    days = ctx.settings.retention_days
    if days is None:
        return 0
    cutoff = utcnow() - timedelta(days=days)
    with ctx.session_factory() as session:
        jobs = session.scalars(
            select(Job)
            .where(
                Job.status.in_(TERMINAL),
                Job.finished_at < cutoff,
                Job.artifacts_pruned_at.is_(None),
            )
            .limit(RETENTION_BATCH)
        ).all()
        for job in jobs:
            ctx.store.delete_tree(f"jobs/{job.id}")
            if job.status != "succeeded":
                ctx.store.delete_tree(f"batch_predictions/{job.id}")
            job.artifacts_pruned_at = utcnow()
        session.commit()
    return len(jobs)
