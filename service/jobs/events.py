"""A job's Server-Sent Events (docs/API.md): one `progress` per epoch, then one `done`.

Two ways to follow a job, same events on the wire: `pushed` takes the epochs from Redis
pub/sub (service/jobs/progress.py) and reads the database only on open, on a gap, at the end and
once a minute; `polled` (the embedded broker) reads the job every 0.25 s.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from service.jobs.schemas import JobRead
from service.jobs.service import TERMINAL
from service.rows import Job

KEEP_ALIVE_SECONDS = 15.0
POLL_SECONDS = 0.25
SAFETY_READ_SECONDS = 60.0  # pushed streams: a lost last message delays the end by at most this
Load = Callable[[], Awaitable[Job]]


def sse(event: str, data: dict[str, Any], event_id: int | str) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def resume_from(last_event_id: str | None) -> int:
    """Epochs a reconnecting client already has (its Last-Event-ID is the last epoch)."""
    if last_event_id is None or not last_event_id.isdigit() or len(last_event_id) > 9:
        return 0
    return int(last_event_id)


class Replay:
    """The epochs a stream has sent, and the events that bring it up to a job's row."""

    def __init__(self, sent: int) -> None:
        self.sent = sent

    def rows(self, job: Job) -> Iterator[str]:
        history = job.history or {}
        done = len(history.get("loss", []))
        while self.sent < done:
            metrics = {k: v[self.sent] for k, v in history.items() if len(v) > self.sent}
            yield self.progress(job.id, job.epochs, job.status, metrics)

    def progress(self, job_id: str, epochs: int, status: str, metrics: dict[str, Any]) -> str:
        self.sent += 1
        data = {
            "job_id": job_id,
            "epoch": self.sent,
            "epochs": epochs,
            "status": status,
            "metrics": metrics,
        }
        return sse("progress", data, self.sent)

    def done(self, job: Job) -> str:
        return sse("done", JobRead.of(job).model_dump(mode="json"), self.sent)

    def catch_up(self, job: Job) -> Iterator[str]:
        """What the job's row has that the stream has not sent; `done` once the job ended."""
        yield from self.rows(job)
        if job.status in TERMINAL:
            yield self.done(job)


async def polled(
    load: Load, job: Job, replay: Replay, disconnected: Callable[[], Awaitable[bool]]
) -> AsyncIterator[str]:
    """Read the job every 0.25 s (the embedded broker has no pub/sub)."""
    last_beat = time.monotonic()
    while True:
        for event in replay.catch_up(job):
            yield event
        if job.status in TERMINAL:
            return
        if time.monotonic() - last_beat > KEEP_ALIVE_SECONDS:
            last_beat = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS)
        if await disconnected():
            return
        job = await load()


async def pushed(
    load: Load, job: Job, replay: Replay, queue: "asyncio.Queue[dict[str, Any]]"
) -> AsyncIterator[str]:
    """Follow the job's pushed messages; read its row only when they cannot say enough."""
    read_at = time.monotonic()
    while True:
        for event in replay.catch_up(job):
            yield event
        if job.status in TERMINAL:
            return
        while True:  # until the row must be read again
            try:
                message = await asyncio.wait_for(queue.get(), KEEP_ALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                if time.monotonic() - read_at < SAFETY_READ_SECONDS:
                    continue
                break
            if message.get("type") != "progress":  # a status change, or a resync
                break
            epoch = int(message.get("epoch", 0))
            if epoch <= replay.sent:  # an epoch run again after a resume: already sent
                continue
            if epoch > replay.sent + 1:  # a gap: the row has the missing epochs
                break
            yield replay.progress(
                job.id, int(message["epochs"]), str(message["status"]), message["metrics"]
            )
        job, read_at = await load(), time.monotonic()
