"""Shapes of GET /v1/jobs/{job_id}/logs."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.rows import JobLogLine

Level = Literal["info", "warning", "error"]


class LogLine(BaseModel):
    seq: int = Field(description="Position in the job's log, counting up from 1.")
    time: datetime = Field(description="When the worker wrote it (UTC).")
    level: Level = Field(description="info, warning or error.")
    event: str = Field(
        description="What happened: started, epoch, resumed, handed_back, cancelled, failed, "
        "succeeded, lease_lost, lease_expired, truncated."
    )
    message: str = Field(description="The line as a person reads it.")
    extra: dict[str, Any] = Field(
        description="The same facts as data: attempt and worker (started), epoch and metrics "
        "(epoch), code and traceback (failed), model_id (succeeded)."
    )

    @classmethod
    def of(cls, row: JobLogLine) -> "LogLine":
        return cls(
            seq=row.seq,
            time=row.time,
            level=row.level,  # type: ignore[arg-type]
            event=row.event,
            message=row.message,
            extra=row.extra or {},
        )


class JobLogs(BaseModel):
    job_id: str
    status: str = Field(description="The job's status when the lines were read.")
    lines: list[LogLine] = Field(description="Oldest first, at most `limit`.")
    next_after: int = Field(
        description="Pass as `after` to read the lines written since (the last seq returned, "
        "else the `after` asked)."
    )
