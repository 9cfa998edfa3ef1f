"""Job leases: which worker may train a job. The database decides, not the broker.

A worker claims a job with one conditional UPDATE (queued, or running with an expired lease),
renews the lease by heartbeats while it trains, and writes results only while it still holds
it. A redelivered message for a job held by a live worker is dropped.
"""

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from service.jobs.progress import publish_status
from service.jobs.service import TERMINAL
from service.rows import Job, utcnow
from worker.context import WorkerContext

log = logging.getLogger(__name__)
WATCH_SECONDS = 0.5
DB_RETRIES, DB_RETRY_SECONDS = 30, 2.0  # ride out a database restart of about a minute
# Set when this process is asked to stop (SIGTERM reaching a prefork child directly): the
# running job checkpoints and hands itself back rather than dying mid-epoch.
HAND_BACK = threading.Event()
TRAINING = threading.Event()


def _on_sigterm(signum: int, _frame: Any) -> None:
    if HAND_BACK.is_set() or not TRAINING.is_set():  # idle, or asked twice: stop now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    HAND_BACK.set()


def hand_back_on_sigterm() -> None:
    """Install the SIGTERM handler above (in prefork children; Celery owns the parent's)."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def worker_id(node: str | None = None) -> str:
    """This process's lease owner name: Celery node (or host) and pid."""
    return f"{node or socket.gethostname()}/{os.getpid()}"


class StopSignal:
    """Why training should stop early; set from a watcher thread, read at each batch end."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


@dataclass
class Claim:
    kind: str
    spec: dict[str, Any]
    tenant: str
    attempts: int
    owner: str
    spec_version: int = 1


def claim(ctx: WorkerContext, job_id: str, owner: str) -> Claim | None:
    """Take the job, or None: unknown, ended, cancelled, or held by a live worker."""
    now = utcnow()
    expires = now + timedelta(seconds=ctx.settings.lease_seconds)
    with ctx.session_factory() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None or job.status in TERMINAL:
            return None
        if job.cancel_requested and job.status == "queued":
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="cancelled", finished_at=now)
            )
            session.commit()
            return None
        if job.attempts >= ctx.settings.max_attempts:
            fail_worker_lost(session, job_id, job.attempts)
            session.commit()
            return None
        taken = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.cancel_requested.is_(False),
                or_(
                    Job.status == "queued",
                    and_(
                        Job.status == "running",
                        or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now),
                    ),
                ),
            )
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=expires,
                attempts=Job.attempts + 1,
                release_requested=False,
                started_at=now,
                error=None,
            )
        )
        session.commit()
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        publish_status(ctx.settings, job_id, "running")
        job = session.scalar(select(Job).where(Job.id == job_id))
        assert job is not None
        return Claim(job.kind, dict(job.spec), job.tenant, job.attempts, owner, job.spec_version)


def fail_worker_lost(session: Any, job_id: str, attempts: int) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.notin_(TERMINAL))
        .values(
            status="failed",
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires_at=None,
            error={
                "code": "worker_lost",
                "message": f"The job's worker was lost {attempts} times; giving up.",
            },
        )
    )


def owned(owner: str) -> Any:
    return Job.lease_owner == owner


def finish(
    ctx: WorkerContext,
    job_id: str,
    owner: str,
    add: Callable[[Session], None] | None = None,
    **values: Any,
) -> bool:
    """Write the job's end (and `add` what goes with it) in one transaction, only while this
    worker holds the lease; a database restart is ridden out rather than losing the result."""
    for attempt in range(DB_RETRIES):
        try:
            with ctx.session_factory() as session:
                done = session.execute(
                    update(Job)
                    .where(Job.id == job_id, owned(owner))
                    .values(finished_at=utcnow(), lease_owner=None, lease_expires_at=None, **values)
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    session.rollback()
                    return False
                if add is not None:
                    add(session)
                session.commit()
                if "status" in values:  # open event streams end now (never raises)
                    publish_status(ctx.settings, job_id, str(values["status"]))
                return True
        except OperationalError:
            log.warning("database unavailable while ending job %s (try %d)", job_id, attempt)
            time.sleep(DB_RETRY_SECONDS)
        except IntegrityError:  # two models of one name took the same version: number again
            log.info("version race while ending job %s (try %d)", job_id, attempt)
    raise RuntimeError("the database stayed unavailable while ending the job")


def release(ctx: WorkerContext, job_id: str, owner: str) -> bool:
    """Hand the job back (graceful stop): queued again, the try not counted as lost."""
    with ctx.session_factory() as session:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, owned(owner))
            .values(
                status="queued",
                lease_owner=None,
                lease_expires_at=None,
                release_requested=False,
                attempts=Job.attempts - 1,
                enqueued_at=utcnow(),
            )
        )
        session.commit()
        return done.rowcount == 1  # type: ignore[attr-defined,no-any-return]


class Watcher(threading.Thread):
    """Renews the lease and watches for cancel and release requests while a job trains."""

    def __init__(self, ctx: WorkerContext, job_id: str, owner: str, signal: StopSignal) -> None:
        super().__init__(daemon=True, name=f"lease-{job_id}")
        self.ctx, self.job_id, self.owner, self.signal = ctx, job_id, owner, signal
        self.done = threading.Event()

    def run(self) -> None:
        beat_every = self.ctx.settings.heartbeat_seconds
        last_beat = 0.0
        elapsed = 0.0
        while not self.done.wait(WATCH_SECONDS):
            elapsed += WATCH_SECONDS
            try:
                with self.ctx.session_factory() as session:
                    row = session.execute(
                        select(Job.cancel_requested, Job.release_requested, Job.lease_owner).where(
                            Job.id == self.job_id
                        )
                    ).one()
                    if row.lease_owner != self.owner:
                        self.signal.set("lease_lost")
                        return
                    if row.cancel_requested:
                        self.signal.set("cancelled")
                    elif row.release_requested or HAND_BACK.is_set():
                        self.signal.set("released")
                    if elapsed - last_beat >= beat_every:
                        expires = utcnow() + timedelta(seconds=self.ctx.settings.lease_seconds)
                        session.execute(
                            update(Job)
                            .where(Job.id == self.job_id, owned(self.owner))
                            .values(lease_expires_at=expires)
                        )
                        session.commit()
                        last_beat = elapsed
            except Exception:  # a database restart must not kill training; the lease may lapse
                log.warning("lease watcher could not reach the database", exc_info=True)

    def start(self) -> None:
        TRAINING.set()
        super().start()

    def stop(self) -> None:
        self.done.set()
        self.join()
        TRAINING.clear()


def request_release(ctx: WorkerContext, node: str) -> int:
    """Ask this node's running jobs to checkpoint and hand themselves back (graceful stop)."""
    with ctx.session_factory() as session:
        done = session.execute(
            update(Job)
            .where(Job.status == "running", Job.lease_owner.like(f"{node}/%"))
            .values(release_requested=True)
        )
        session.commit()
        return done.rowcount  # type: ignore[attr-defined,no-any-return]
