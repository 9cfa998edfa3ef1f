"""Job progress pushed over Redis pub/sub, so that open event streams read no database.

Workers publish one small message per epoch and per status change on one channel per
deployment (`{KTS_QUEUE}.progress`, the job id in the payload); each API process keeps one
subscriber (a `ProgressHub` on its event loop) that fans the messages out to the streams of that
process. A stream reads the database when it opens, when it sees a gap (a message it missed, the
subscriber reconnected), when the job ends (the `done` event carries the whole job) and once a
minute as a safety net; never per tick. With the embedded broker (no Redis), or
KTS_PROGRESS_PUSH=false, streams read the database every 0.25 s as before.

Publishing is best effort: the database stays the record, and a lost message only delays a
stream until its next gap check.
"""

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from service.settings import Settings

log = logging.getLogger(__name__)
RESYNC: dict[str, Any] = {"type": "resync"}  # to every stream after the subscriber reconnects
_clients: dict[str, Any] = {}
_lock = threading.Lock()


def push_enabled(settings: Settings) -> bool:
    return settings.progress_push and settings.resolved_broker_url().startswith(
        ("redis://", "rediss://")
    )


def channel(settings: Settings) -> str:
    return f"{settings.queue}.progress"


# --- publishing (workers, and the API for a cancelled queued job) ------------------------------


def _client(url: str) -> Any:
    import redis

    with _lock:
        if url not in _clients:
            # short timeouts: a Redis outage must not hold up training for long each epoch
            _clients[url] = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=0.5)
        return _clients[url]


def publish(settings: Settings, message: dict[str, Any]) -> None:
    """Send one message to the streams of every API process; never raises."""
    if not push_enabled(settings):
        return
    try:
        data = json.dumps(message, default=str)
        _client(settings.resolved_broker_url()).publish(channel(settings), data)
    except Exception:  # the database has it; streams catch up at their next read
        log.warning("could not publish progress of job %s", message.get("job_id"), exc_info=True)


def epoch_message(
    job_id: str, epoch: int, epochs: int, history: dict[str, list[Any]]
) -> dict[str, Any]:
    """The `progress` event of `epoch` (counted from 1), as the stream sends it."""
    metrics = {k: v[epoch - 1] for k, v in history.items() if len(v) >= epoch}
    return {
        "type": "progress",
        "job_id": job_id,
        "epoch": epoch,
        "epochs": epochs,
        "status": "running",
        "metrics": metrics,
    }


def publish_epoch(
    settings: Settings, job_id: str, epoch: int, epochs: int, history: dict[str, list[Any]]
) -> None:
    publish(settings, epoch_message(job_id, epoch, epochs, history))


def publish_status(settings: Settings, job_id: str, status: str) -> None:
    publish(settings, {"type": "status", "job_id": job_id, "status": status})


# --- following (the API's event streams) -------------------------------------------------------


class ProgressHub:
    """One Redis subscription per API process, fanned out to the open streams by job id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.streams: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.ready = asyncio.Event()
        self.task = self.loop.create_task(self._listen())

    @asynccontextmanager
    async def follow(self, job_id: str) -> AsyncIterator["asyncio.Queue[dict[str, Any]]"]:
        """A queue of this job's messages while the block runs (subscribed before it starts)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.streams.setdefault(job_id, set()).add(queue)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), 5)  # Redis down: the safety reads cover it
        try:
            yield queue
        finally:
            followers = self.streams.get(job_id, set())
            followers.discard(queue)
            if not followers:
                self.streams.pop(job_id, None)

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.settings.resolved_broker_url())
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel(self.settings))
                    self.ready.set()
                    self._to_all(RESYNC)  # messages may have been missed while away
                    async for raw in pubsub.listen():
                        if raw.get("type") == "message":
                            self._dispatch(raw["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("progress subscriber lost Redis; reconnecting", exc_info=True)
                self.ready.clear()
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        for queue in self.streams.get(str(message.get("job_id")), ()):
            _put(queue, message)

    def _to_all(self, message: dict[str, Any]) -> None:
        for followers in self.streams.values():
            for queue in followers:
                _put(queue, message)


def _put(queue: "asyncio.Queue[dict[str, Any]]", message: dict[str, Any]) -> None:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:  # a stream far behind: it re-reads the database instead
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
        queue.put_nowait(RESYNC)


def hub_of(state: Any) -> ProgressHub | None:
    """The app's hub on the running event loop (made on first use), or None without push."""
    settings = state.settings
    if not push_enabled(settings):
        return None
    hub: ProgressHub | None = getattr(state, "progress_hub", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():  # e.g. a new test loop
        hub = state.progress_hub = ProgressHub(settings)
    return hub
