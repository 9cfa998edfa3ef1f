"""Reading a job's log lines: oldest first after a seq, optionally from a level up."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.logs.schemas import JobLogs, Level, LogLine
from service.rows import Job, JobLogLine

ORDER: list[Level] = ["info", "warning", "error"]


def read_lines(session: Session, job: Job, after: int, limit: int, level: Level | None) -> JobLogs:
    """Up to `limit` lines with seq > `after`; with `level`, only lines at it or above."""
    query = select(JobLogLine).where(JobLogLine.job_id == job.id, JobLogLine.seq > after)
    if level is not None:
        query = query.where(JobLogLine.level.in_(ORDER[ORDER.index(level) :]))
    rows = session.scalars(query.order_by(JobLogLine.seq).limit(limit)).all()
    lines = [LogLine.of(r) for r in rows]
    return JobLogs(
        job_id=job.id,
        status=job.status,
        lines=lines,
        next_after=lines[-1].seq if lines else after,
    )


def as_text(logs: JobLogs) -> str:
    """One line per log line (`time level message`), a traceback's lines indented below it."""
    out = []
    for line in logs.lines:
        out.append(f"{line.time.isoformat(timespec='seconds')} {line.level.upper()} {line.message}")
        trace = line.extra.get("traceback")
        if isinstance(trace, str):
            out.extend("    " + t for t in trace.rstrip("\n").splitlines())
    return "".join(s + "\n" for s in out)
