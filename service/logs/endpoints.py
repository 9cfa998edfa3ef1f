"""GET /v1/jobs/{job_id}/logs: a job's own log lines, for tailing (`after`) or reading whole."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from service.auth import TenantDep
from service.deps import SessionDep
from service.jobs.service import get_job
from service.logs import service as logs
from service.logs.schemas import JobLogs, Level

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

TEXT = {"text/plain": {"schema": {"type": "string"}}}


@router.get(
    "/{job_id}/logs",
    response_model=JobLogs,
    responses={200: {"content": TEXT, "description": "format=json: the lines; text: plain text."}},
)
def job_logs(
    job_id: str,
    tenant: TenantDep,
    session: SessionDep,
    after: Annotated[
        int, Query(ge=0, le=2**31 - 1, description="Only lines with a larger seq.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most lines returned.")] = 200,
    level: Annotated[Level | None, Query(description="Only lines at this level or above.")] = None,
    format: Annotated[Literal["json", "text"], Query(description="json or text.")] = "json",
) -> JobLogs | PlainTextResponse:
    """A job's log lines (start, epochs, resume, hand-back, end), oldest first."""
    found = logs.read_lines(session, get_job(session, job_id, tenant), after, limit, level)
    if format == "text":
        headers = {"X-Next-After": str(found.next_after)}
        return PlainTextResponse(logs.as_text(found), headers=headers)
    return found
