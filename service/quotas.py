"""Per-tenant quotas, each a guard against one tenant crowding out the others:
- jobs (of every kind) queued or running at once: past it, a submission is 429 with
  Retry-After before its body is planned. The count and the insert are not one transaction,
  so concurrent submissions can pass it by a few jobs;
- bytes of stored data sets: past it, an upload is 413 and nothing is stored;
- predict requests per second: a token bucket per tenant in each API process (so N processes
  allow N times the rate), 429 with the seconds until a token is back.
"""

import math
import time
from collections.abc import Sequence

from fastapi import Depends, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.auth import TenantDep
from service.deps import SessionDep, SettingsDep
from service.errors import ApiError
from service.rows import Dataset, Job
from service.settings import Settings

ACTIVE = ("queued", "running")
BURST_SECONDS = 2.0  # a tenant idle for a while may send this many seconds' worth at once
RETRY_AFTER_SECONDS = 30


class QuotaExceeded(ApiError):
    status_code = 429
    code = "quota_exceeded"
    retry_after = RETRY_AFTER_SECONDS


class StorageQuotaExceeded(ApiError):
    status_code = 413
    code = "quota_exceeded"


def _job_quota(
    request: Request, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> None:
    idempotency_key = request.headers.get("idempotency-key")
    limit = settings.max_active_jobs_per_tenant
    if limit <= 0:
        return
    if idempotency_key is not None and session.scalar(
        select(Job.id).where(Job.tenant == tenant, Job.idempotency_key == idempotency_key)
    ):
        return  # a retry of a submission that was accepted: it adds no job
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status.in_(ACTIVE))
    )
    if (active or 0) >= limit:
        raise QuotaExceeded(
            f"Expected at most {limit} queued or running jobs per tenant "
            f"(KTS_MAX_ACTIVE_JOBS_PER_TENANT). Received: {active} already; retry when some end."
        )


JOB_QUOTA = Depends(_job_quota)  # as `dependencies=[JOB_QUOTA]` on each route that adds a job


def check_storage(session: Session, tenant: str, settings: Settings, new_bytes: int) -> None:
    """Refuse an upload that would take the tenant's stored data sets past the quota."""
    limit = settings.max_stored_bytes_per_tenant
    if limit <= 0:
        return
    rows = session.execute(
        select(Dataset.n_samples, Dataset.input_shape).where(Dataset.tenant == tenant)
    )
    stored = sum(dataset_bytes(n, shape) for n, shape in rows)
    if stored + new_bytes > limit:
        raise StorageQuotaExceeded(
            f"Expected the tenant's data sets to stay within {limit} bytes "
            f"(KTS_MAX_STORED_BYTES_PER_TENANT). Received: {new_bytes} more on {stored} "
            "stored; delete data sets that are no longer needed."
        )


def dataset_bytes(n_samples: int, input_shape: Sequence[int]) -> int:
    """Stored size of a data set: float32 features and an 8-byte label per row."""
    return n_samples * (4 * math.prod(input_shape) + 8)


class TokenBuckets:
    """Predict requests per second per tenant, in this process (event-loop only: no lock)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate * BURST_SECONDS)
        self.buckets: dict[str, tuple[float, float]] = {}  # tenant: (tokens, at)

    def take(self, tenant: str) -> float:
        """0 when a request may go now, else the seconds until it may."""
        now = time.monotonic()
        tokens, at = self.buckets.get(tenant, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1:
            self.buckets[tenant] = (tokens, now)
            return (1 - tokens) / self.rate
        self.buckets[tenant] = (tokens - 1, now)
        return 0.0


async def _predict_rate(request: Request, tenant: TenantDep) -> None:
    rate = request.app.state.settings.predict_rate_per_tenant
    if rate <= 0:
        return
    state = request.app.state
    if getattr(state, "predict_buckets", None) is None:
        state.predict_buckets = TokenBuckets(rate)
    wait = state.predict_buckets.take(tenant)
    if wait > 0:
        exc = QuotaExceeded(
            f"Expected at most {rate:g} predict requests per second per tenant "
            "(KTS_PREDICT_RATE_PER_TENANT). Retry after the Retry-After seconds."
        )
        exc.retry_after = max(1, math.ceil(wait))
        raise exc


PREDICT_RATE = Depends(_predict_rate)  # as `dependencies=[PREDICT_RATE]` on predict routes
