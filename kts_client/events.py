"""Server-Sent Events of a job (GET /v1/jobs/{id}/events), read line by line without I/O so
that the sync and async clients share the parsing, the resume point and the de-duplication."""

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from kts_client.errors import Unavailable
from service.jobs.schemas import JobRead


@dataclass(frozen=True)
class ProgressEvent:
    """One epoch run: its number (from 1), the planned total and that epoch's metrics."""

    job_id: str
    epoch: int
    epochs: int
    status: str
    metrics: dict[str, Any]

    @property
    def learning_rate(self) -> float | None:
        """The optimizer's learning rate at the end of this epoch."""
        value = self.metrics.get("learning_rate")
        return None if value is None else float(value)


@dataclass(frozen=True)
class DoneEvent:
    """The job has ended: the job object as it ended."""

    job: JobRead


JobEvent = ProgressEvent | DoneEvent


@dataclass
class _Message:
    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


class FollowState:
    """Decodes the stream, remembers where to resume and drops epochs already yielded.

    After a dropped connection the request carries `Last-Event-ID` (the last `id:` seen); a
    server that ignores it replays from epoch 1, and those epochs are skipped here."""

    def __init__(self, job_id: str, max_retries: int = 10, retry_seconds: float = 1.0) -> None:
        self.job_id = job_id
        self.last_id: str | None = None
        self.last_epoch = 0
        self.done = False
        self.failures = 0
        self.max_retries = max_retries
        self.retry_seconds = retry_seconds
        self._message = _Message()

    def headers(self) -> dict[str, str]:
        """Headers of the next (re)connection."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def feed(self, line: str) -> JobEvent | None:
        """Take one line of the stream; an event to yield when a blank line completes one."""
        if line:
            self._field(line)
            return None
        message, self._message = self._message, _Message()
        if message.id is not None:
            self.last_id = message.id
        if not message.data:
            return None
        self.failures = 0  # the connection delivers: a later drop starts a fresh count
        return self._event(message.event, json.loads("\n".join(message.data)))

    def _field(self, line: str) -> None:
        if line.startswith(":"):
            return  # a comment, e.g. `: keep-alive`
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._message.event = value
        elif name == "data":
            self._message.data.append(value)
        elif name == "id" and "\0" not in value:
            self._message.id = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = min(int(value) / 1000, 30.0)

    def _event(self, name: str, data: dict[str, Any]) -> JobEvent | None:
        if name == "done":
            self.done = True
            return DoneEvent(JobRead.model_validate(data))
        if name != "progress" or int(data["epoch"]) <= self.last_epoch:
            return None  # an epoch replayed after a reconnection, or an unknown event
        self.last_epoch = int(data["epoch"])
        return ProgressEvent(
            job_id=str(data.get("job_id", self.job_id)),
            epoch=int(data["epoch"]),
            epochs=int(data["epochs"]),
            status=str(data.get("status", "running")),
            metrics=dict(data.get("metrics") or {}),
        )

    def dropped(self, error: Exception | None) -> float:
        """Seconds to wait before reconnecting after a drop; re-raises past max_retries."""
        self._message = _Message()  # a half-received event is discarded
        self.failures += 1
        if self.failures > self.max_retries:
            if error is not None:
                raise error
            raise ConnectionError(f"The event stream of job {self.job_id} kept closing early.")
        return self.retry_seconds * min(2 ** (self.failures - 1), 8)


# A connection that drops, times out or answers 503 is retried; other errors are final.
RETRIED = (httpx.TransportError, Unavailable)
# Keep-alive comments come every 15 s: a minute of silence means a dead connection.
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
