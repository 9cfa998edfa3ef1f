"""A job's own log, stored in job_log_lines for GET /v1/jobs/{job_id}/logs.

The worker holding a job's lease is its only writer, so the next `seq` is read once per attempt
and counted on in memory: one INSERT per line. A write that fails is logged here and never
reaches the job. Past `job_log_max_lines`, each new epoch line drops the job's oldest one (a
note says so once), so a 10,000-epoch job keeps its start, its last epochs and its end.
"""

import logging
import math
import traceback
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.rows import JobLogLine
from worker.context import WorkerContext

log = logging.getLogger(__name__)
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_MESSAGE = 2000
MAX_TRACEBACK = 20_000
TRUNCATED = "truncated"
UNSHOWN = ("learning_rate", "momentum")  # in the line's metrics, not in its text


def plain(value: Any) -> Any:
    """`value` as JSON every database stores: NaN and infinities become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    try:
        return plain(float(value))  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _number(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4g}"


class JobLog:
    """The log lines of one job, written by the worker that runs it."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.limit = ctx.settings.job_log_max_lines
        self._next: int | None = None  # read from the table at the first write
        self._noted = False

    def info(self, event: str, message: str, **extra: Any) -> None:
        self.write("info", event, message, **extra)

    def warning(self, event: str, message: str, **extra: Any) -> None:
        self.write("warning", event, message, **extra)

    def error(self, event: str, message: str, **extra: Any) -> None:
        self.write("error", event, message, **extra)

    def failure(self, code: str, message: str, exc: BaseException | None = None) -> None:
        """The failure's cause, with its traceback when it was not an end we raised ourselves."""
        extra: dict[str, Any] = {"code": code}
        if exc is not None:
            trace = "".join(traceback.format_exception(exc))
            extra["traceback"] = trace[-MAX_TRACEBACK:]  # the innermost frames matter most
        self.error("failed", f"failed ({code}): {message}", **extra)

    def epoch(self, epoch: int, epochs: int, history: dict[str, list[float | None]]) -> None:
        """One line for an epoch that has just ended, with its metrics."""
        metrics = {k: v[-1] for k, v in history.items() if v and k != "epoch_seconds"}
        shown = " ".join(f"{k}={_number(v)}" for k, v in metrics.items() if k not in UNSHOWN)
        seconds = (history.get("epoch_seconds") or [None])[-1]
        self.info(
            "epoch",
            f"epoch {epoch}/{epochs}: {shown}".rstrip(),
            epoch=epoch,
            epochs=epochs,
            metrics=metrics,
            seconds=seconds,
        )

    def write(self, level: str, event: str, message: str, **extra: Any) -> None:
        """Store one line (and log it in this process); a failure never reaches the job."""
        log.log(
            logging.DEBUG if event == "epoch" else LEVELS[level],
            message,
            extra={"event": event, **{k: v for k, v in extra.items() if k != "traceback"}},
        )
        try:
            with self.ctx.session_factory() as session:
                self._store(session, level, event, message, plain(extra))
                session.commit()
        except Exception:  # the log must never fail the job: the next line reads seq again
            self._next = None
            log.warning("could not store a log line of job %s", self.job_id, exc_info=True)

    def _store(
        self, session: Session, level: str, event: str, message: str, extra: dict[str, Any]
    ) -> None:
        if self._next is None:
            last = session.scalar(
                select(func.max(JobLogLine.seq)).where(JobLogLine.job_id == self.job_id)
            )
            self._next = (last or 0) + 1
        seq = self._next
        if event == "epoch" and seq > self.limit:
            seq = self._drop_oldest_epoch(session, seq)
        session.add(
            JobLogLine(
                job_id=self.job_id,
                seq=seq,
                level=level,
                event=event,
                message=message[:MAX_MESSAGE],
                extra=extra,
            )
        )
        session.flush()
        self._next = seq + 1

    def _drop_oldest_epoch(self, session: Session, seq: int) -> int:
        """Make room for one epoch line; the seq the new line takes (after the note, once)."""
        oldest = session.scalar(
            select(func.min(JobLogLine.seq)).where(
                JobLogLine.job_id == self.job_id, JobLogLine.event == "epoch"
            )
        )
        if oldest is not None:
            session.execute(
                delete(JobLogLine).where(JobLogLine.job_id == self.job_id, JobLogLine.seq == oldest)
            )
        if not self._noted:  # once per attempt: an earlier attempt may have written it
            self._noted = True
            noted = session.scalar(
                select(JobLogLine.seq).where(
                    JobLogLine.job_id == self.job_id, JobLogLine.event == TRUNCATED
                )
            )
            if noted is None:
                text = (
                    f"this job's log keeps at most {self.limit} lines: its oldest epoch lines "
                    "are dropped from here on"
                )
                session.add(
                    JobLogLine(
                        job_id=self.job_id,
                        seq=seq,
                        level="warning",
                        event=TRUNCATED,
                        message=text,
                        extra={"limit": self.limit},
                    )
                )
                return seq + 1
        return seq
