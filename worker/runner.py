"""Running one job of any kind: take its lease, dispatch by kind, record any failure."""

import logging

from service.errors import ApiError
from worker.batch_predict import run_batch_prediction
from worker.context import WorkerContext
from worker.errors import JobFailed
from worker.lease import claim, finish, worker_id
from worker.optimize import run_optimize
from worker.training.runner import train

log = logging.getLogger(__name__)
RUNNERS = {"train": train, "optimize": run_optimize, "batch_predict": run_batch_prediction}


def run_job(ctx: WorkerContext, job_id: str, owner: str | None = None) -> str:
    """Run one job (train, optimize, batch_predict) if this worker can take its lease.

    'skipped' when the job is unknown, ended, cancelled, or held by a live worker (a
    redelivered message is harmless). A failure is always stored with a clear error.
    """
    owner = owner or worker_id()
    claimed = claim(ctx, job_id, owner)
    if claimed is None:
        return "skipped"
    try:
        return RUNNERS[claimed.kind](ctx, job_id, claimed)
    except (JobFailed, ApiError) as exc:  # ApiError: the data changed under a queued job
        finish(
            ctx,
            job_id,
            owner,
            status="failed",
            error={"code": exc.code, "message": exc.message[:1000]},
        )
        return "failed"
    except Exception as exc:
        log.exception("job %s failed", job_id)
        finish(
            ctx,
            job_id,
            owner,
            status="failed",
            error={"code": "training_error", "message": f"{type(exc).__name__}: {str(exc)[:1000]}"},
        )
        return "failed"
