"""Job progress pushed over Redis pub/sub, so that open event streams read no database.

Workers publish one small message per epoch and per status change on one channel per
deployment (`{KTS_QUEUE}.progress`, the job id in the payload); each API process keeps one
subscriber (a `ProgressHub` on its event loop) that fans the messages out to the streams of that
process. A stream reads the database when it opens, when it sees a gap (a message it missed, the
subscriber reconnected), when the job ends (the `done` event carries the whole job) and once a
minute as a safety net; never per tick. With the embedded broker (no Redis), or
KTS_PROGRESS_PUSH=false, streams read the database every 0.25 s as before.

The subscriber lets redis-py retry nothing, so no reconnect goes unseen: a connection that
breaks, or stays silent for SILENT_SECONDS while it is pinged every PING_SECONDS (a half-open
TCP connection), reaches its loop, which tells every stream to read the database, reconnects
with backoff and tells them again once subscribed.

Publishing is best effort: the database stays the record, and a lost message only delays a
stream until its next gap check.
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from service.queue_redis import is_redis, redis_client
from service.settings import Settings

log = logging.getLogger(__name__)
RESYNC: dict[str, Any] = {"type": "resync"}  # to every stream when messages may have been lost
PING_SECONDS = 10.0  # an idle subscription asks Redis for a pong this often
SILENT_SECONDS = 30.0  # nothing heard for this long, pongs included: the connection is dead
RECONNECT_SECONDS = (0.5, 10.0)  # the first wait before reconnecting, doubled up to the second


def push_enabled(settings: Settings) -> bool:
    return settings.progress_push and is_redis(settings.resolved_broker_url())


def channel(settings: Settings) -> str:
    return f"{settings.queue}.progress"


# --- publishing (workers, and the API for a cancelled queued job) ------------------------------


def publish(settings: Settings, message: dict[str, Any]) -> None:
    """Send one message to the streams of every API process; never raises."""
    if not push_enabled(settings):
        return
    try:
        data = json.dumps(message, default=str)
        # one retry, short timeouts (queue_redis.redis_client): an outage costs an epoch seconds
        redis_client(settings.resolved_broker_url()).publish(channel(settings), data)
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

    async def close(self) -> None:
        """Stop the subscriber and close its connection (at app shutdown)."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _listen(self) -> None:
        delay = RECONNECT_SECONDS[0]
        while True:
            try:
                await self._subscribe()
            except Exception as e:  # not CancelledError: shutdown ends the loop
                log.warning("progress subscriber lost Redis (%r); reconnecting", e)
            if self.ready.is_set():  # it was subscribed: a fresh outage
                delay = RECONNECT_SECONDS[0]
            self.ready.clear()
            self._to_all(RESYNC)  # streams read the database now, not at their safety read
            await asyncio.sleep(delay)
            delay = min(2 * delay, RECONNECT_SECONDS[1])

    async def _subscribe(self) -> None:
        """Follow the channel on one connection until it fails (it always raises)."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis.from_url(
            self.settings.resolved_broker_url(),
            retry=Retry(NoBackoff(), 0),  # a silent reconnect would lose messages unnoticed
            socket_connect_timeout=5,
            socket_timeout=PING_SECONDS,
            socket_keepalive=True,
            client_name=subscriber_name(self.settings),
        )
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel(self.settings))
                await self._pump(pubsub)
        finally:
            await client.aclose()

    async def _pump(self, pubsub: Any) -> None:
        """Hand each message to its streams; raise when Redis stops answering."""
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            raw = await pubsub.get_message(timeout=PING_SECONDS)
            now = loop.time()
            if raw is not None:
                heard = now
                self._handle(raw)
            elif now - heard >= SILENT_SECONDS:
                raise ConnectionError(f"no answer from Redis in {SILENT_SECONDS:.0f} s")
            if now - max(heard, pinged) >= PING_SECONDS:
                await pubsub.ping()  # its pong comes back through get_message
                pinged = now

    def _handle(self, raw: dict[str, Any]) -> None:
        if raw.get("type") == "message":
            self._dispatch(raw["data"])
        elif raw.get("type") == "subscribe":  # subscribed: streams read what they may have missed
            self.ready.set()
            self._to_all(RESYNC)

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


def subscriber_name(settings: Settings) -> str:
    """The subscriber connection's name in Redis's CLIENT LIST."""
    return f"{channel(settings)}:{os.getpid()}"


async def close_hub(state: Any) -> None:
    """Stop the app's hub, if it has one on this event loop (the app's shutdown)."""
    hub: ProgressHub | None = getattr(state, "progress_hub", None)
    if hub is not None and hub.loop is asyncio.get_running_loop():
        await hub.close()
        state.progress_hub = None


def hub_of(state: Any) -> ProgressHub | None:
    """The app's hub on the running event loop (made on first use), or None without push."""
    settings = state.settings
    if not push_enabled(settings):
        return None
    hub: ProgressHub | None = getattr(state, "progress_hub", None)
    if hub is None or hub.loop is not asyncio.get_running_loop():  # e.g. a new test loop
        hub = state.progress_hub = ProgressHub(settings)
    return hub
