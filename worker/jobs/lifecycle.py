"""One life cycle for every job kind: claim the lease, run the kind's runner while a watcher
renews the lease and listens for cancel and hand-back, then end the job under the lease
(storing the model row and its artifact in the same transaction), or record the failure.

A kind's runner receives a `JobRun` and returns what happened ("succeeded", "cancelled",
"released", "lease_lost"); it raises JobFailed for an end the user should read.
"""

import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.errors import ApiError
from service.logs.context import bind, log_scope
from service.models.registry import next_version
from service.registry import register_in
from service.rows import TrainedModel, new_id
from service.storage import disk_full_as_storage_full
from worker.context import WorkerContext
from worker.jobs.joblog import JobLog
from worker.jobs.lease import Claim, StopSignal, Watcher, claim, finish, release, worker_id
from worker.jobs.reconcile import requeue

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """An end the user reads: `code` is stored as the job's error.code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class JobRun:
    """A claimed job in this worker: what every kind's runner works with."""

    ctx: WorkerContext
    job_id: str
    claim: Claim
    signal: StopSignal = field(default_factory=StopSignal)
    log: JobLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = JobLog(self.ctx, self.job_id)

    @property
    def owner(self) -> str:
        return self.claim.owner

    @contextmanager
    def watched(self) -> Iterator[StopSignal]:
        """Renew the lease and watch for cancel and hand-back requests meanwhile."""
        watcher = Watcher(self.ctx, self.job_id, self.owner, self.signal)
        watcher.start()
        try:
            yield self.signal
        finally:
            watcher.stop()

    def save_model(self, model: Any, **fields: Any) -> TrainedModel:
        """Store the Keras model as an artifact; the row (not yet added) describes it."""
        import keras

        from inference.summary import has_dropout, model_summary

        model_id = new_id()
        key = f"models/{model_id}/model.keras"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            model.save(path)
            self.ctx.store.put_file(key, path)
        return TrainedModel(
            id=model_id,
            tenant=self.claim.tenant,
            backend=keras.backend.backend(),
            input_shape=[int(d) for d in model.inputs[0].shape[1:]],
            has_dropout=has_dropout(model),
            summary=model_summary(model),
            artifact_key=key,
            **fields,
        )

    def succeed(
        self,
        model: TrainedModel | None = None,
        add: Callable[[Session], None] | None = None,
        **values: Any,
    ) -> str:
        """End the job as succeeded with its model row, under the lease, in one transaction."""

        def add_all(session: Session) -> None:
            if model is not None:
                model.version = next_version(session, model.tenant, model.name)
                session.add(model)
            if add is not None:
                add(session)

        if model is not None:
            values["model_id"] = model.id
            bind(model_id=model.id)
        # the end line before the end: a reader that sees the job ended has its last line
        made = f": model {model.id} ({model.name})" if model else ""
        self.log.info(
            "succeeded", f"succeeded{made}", model_id=values.get("model_id"),
            metrics=values.get("metrics"),
        )  # fmt: skip
        if finish(self.ctx, self.job_id, self.owner, add_all, status="succeeded", **values):
            return "succeeded"
        self.log.warning("lease_lost", "lease lost before the end: this result is dropped")
        if model is not None:  # another worker holds the job now: keep nothing of ours
            self.ctx.store.delete(model.artifact_key)
        return "lease_lost"

    def stopped(self) -> str:
        """End a job whose signal stopped it early (cancel, hand-back, lost lease)."""
        reason = self.signal.reason
        if reason == "released":
            if release(self.ctx, self.job_id, self.owner):
                self.log.info(
                    "handed_back",
                    "handed back (its worker is stopping): queued again, it resumes from its "
                    "last checkpoint",
                    worker=self.owner,
                )
                requeue(self.ctx, self.job_id, self.claim.kind, self.claim.spec.get("resources"))
            return "released"
        if reason == "cancelled":
            self.log.info("cancelled", "cancelled on request")
            finish(self.ctx, self.job_id, self.owner, status="cancelled")
            return "cancelled"
        self.log.warning("lease_lost", "lease lost: another worker holds the job now")
        return "lease_lost"  # another worker holds the job: write nothing else


PATH = re.compile(r"(/[\w.@+-]+){2,}/?")


def user_message(exc: BaseException, job_id: str) -> str:
    """What failed, in the user's terms: the error's kind and first line, without server paths
    or framework traces (those go to the job's log and the worker's, with the job id)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = PATH.sub("<path>", first)[:300]
    detail = f": {first}" if first else ""
    where = f"kts jobs logs {job_id}"
    return f"{type(exc).__name__}{detail}. The job's log has the full error ({where})."


Runner = Callable[[JobRun], str]
RUNNERS: dict[str, Runner] = {}


def runs(kind: str) -> Callable[[Runner], Runner]:
    """Register the runner of one job kind of service/jobs/kinds.py."""
    return register_in(RUNNERS, kind)


def run_job(ctx: WorkerContext, job_id: str, owner: str | None = None) -> str:
    """Run one job of any kind if this worker can take its lease.

    'skipped' when the job is unknown, ended, cancelled, or held by a live worker (a
    redelivered message is harmless). A failure is always stored with a clear error.
    """
    from worker.jobs import kinds  # noqa: F401  (registers every kind's runner)

    owner = owner or worker_id()
    with log_scope(job_id=job_id):
        claimed = claim(ctx, job_id, owner)
        if claimed is None:
            return "skipped"
        bind(tenant=claimed.tenant)
        return _run_claimed(JobRun(ctx, job_id, claimed))


def _run_claimed(run: JobRun) -> str:
    claimed, ctx = run.claim, run.ctx
    run.log.info(
        "started",
        f"{claimed.kind} job started: attempt {claimed.attempts} of "
        f"{ctx.settings.max_attempts}, worker {run.owner}",
        kind=claimed.kind, attempt=claimed.attempts, worker=run.owner,
    )  # fmt: skip
    try:
        with disk_full_as_storage_full():  # any full-disk write ends as `storage_full`
            return RUNNERS[claimed.kind](run)
    except JobFailed as exc:
        error = {"code": exc.code, "message": exc.message[:1000]}
        run.log.failure(exc.code, exc.message)
    except ApiError as exc:  # the data changed under a queued job
        error = {"code": exc.code, "message": exc.message[:1000]}
        run.log.failure(exc.code, exc.message, exc)
    except OperationalError:  # the database went away (a restart): not the job's fault; its
        # lease lapses and the reconciler queues it again, to resume from its last checkpoint
        log.warning("job %s: the database is unreachable; left to its lease", run.job_id)
        return "database_unavailable"
    except Exception as exc:
        log.exception("job %s failed", run.job_id)  # the traceback, for operators
        error = {"code": "training_error", "message": user_message(exc, run.job_id)}
        run.log.failure("training_error", f"{type(exc).__name__}: {exc}", exc)
    finish(ctx, run.job_id, run.owner, status="failed", error=error)
    return "failed"
