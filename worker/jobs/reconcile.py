"""The queue follows the database, which is the source of truth: jobs whose worker died or
whose message was lost are enqueued again; nothing else ever re-sends a job."""

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select

from service.jobs.service import TERMINAL
from service.rows import Job, utcnow
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


def queue_length(ctx: WorkerContext) -> int | None:
    """Messages waiting in the job queue, or None when the broker cannot say."""
    from service.queue import make_celery

    if ctx.celery is None:
        ctx.celery = make_celery(ctx.settings)
    try:
        with ctx.celery.connection_for_read() as conn:
            ok = conn.default_channel.queue_declare(ctx.settings.queue, passive=True)
            return int(ok.message_count)
    except Exception:
        return None


def reconcile(ctx: WorkerContext) -> dict[str, int]:
    """Make the queue match the database, which is the source of truth.

    Running jobs whose lease expired (their worker died) are enqueued again, or fail as
    worker_lost past max_attempts; queued jobs not started for requeue_after_seconds (their
    message was lost, e.g. with a Redis restart) are enqueued again. Safe to run anywhere
    and often: a duplicate message finds the job taken and is dropped.
    """
    s = ctx.settings
    now = utcnow()
    counts = {"requeued_expired": 0, "requeued_queued": 0, "worker_lost": 0}
    with ctx.session_factory() as session:
        expired = session.scalars(
            select(Job).where(
                Job.status == "running",
                Job.lease_expires_at < now,
                or_(
                    Job.enqueued_at.is_(None),
                    Job.enqueued_at < now - timedelta(seconds=s.lease_seconds),
                ),
            )
        ).all()
        stale = session.scalars(
            select(Job).where(
                Job.status == "queued",
                or_(
                    Job.enqueued_at.is_(None),
                    Job.enqueued_at < now - timedelta(seconds=s.requeue_after_seconds),
                ),
            )
        ).all()
        todo, lost, expired_ids = [], [], set()
        for job in expired:
            if job.attempts >= s.max_attempts:
                fail_worker_lost(session, job.id, job.attempts)
                counts["worker_lost"] += 1
                lost.append((job.id, job.attempts))
            else:
                job.enqueued_at = now
                todo.append((job.id, job.kind, job.spec.get("resources")))
                expired_ids.add(job.id)
                counts["requeued_expired"] += 1
        for job in stale:
            job.enqueued_at = now
            todo.append((job.id, job.kind, job.spec.get("resources")))
            counts["requeued_queued"] += 1
        session.commit()
    for job_id, attempts in lost:  # in the jobs' own logs, after the commit (SQLite: one writer)
        JobLog(ctx, job_id).failure("worker_lost", f"its worker was lost {attempts} times")
    for job_id, kind, resources in todo:  # after the commit, as every enqueue
        if job_id in expired_ids:
            JobLog(ctx, job_id).warning(
                "lease_expired", "its worker stopped renewing the lease: queued again"
            )
        requeue(ctx, job_id, kind, resources)
    return counts


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
