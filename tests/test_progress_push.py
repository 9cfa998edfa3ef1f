"""Progress pushed over Redis pub/sub (service/jobs/progress.py): an open event stream gets each
epoch from the worker's publish and reads no database per tick; on reconnect with
Last-Event-ID it reads the row once, then follows the push."""

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from service.app import create_app
from service.db import make_engine, make_session_factory, upgrade_database
from service.jobs import progress
from service.jobs.progress import ProgressHub, hub_of, publish_epoch, subscriber_name
from service.rows import Job
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import REDIS_URL, make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lease import claim, finish

pytestmark = pytest.mark.postgres
T = TypeVar("T")


@pytest.fixture
def pg_settings(pg_url: str, tmp_path: Path) -> Settings:
    upgrade_database(pg_url)
    return Settings(
        data_dir=tmp_path,
        database_url=pg_url,
        broker_url=REDIS_URL,
        queue=f"kts-push-{uuid.uuid4().hex[:8]}",  # its own queue and progress channel
        artifact_dir=tmp_path / "artifacts",
        require_auth=False,
    )


@pytest.fixture
def client(pg_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(pg_settings)) as c:
        yield c


@pytest.fixture
def worker_ctx(pg_settings: Settings) -> Iterator[WorkerContext]:
    engine = make_engine(pg_settings.resolved_database_url())
    yield WorkerContext(
        pg_settings, make_session_factory(engine), LocalStore(pg_settings.artifact_dir)
    )
    engine.dispose()


class Statements:
    """SQL statements the API process sends, counted on its engine."""

    def __init__(self, client: TestClient) -> None:
        self.count = 0
        event.listen(client.app.state.engine, "before_cursor_execute", self._seen)  # type: ignore[attr-defined]

    def _seen(self, *_args: Any) -> None:
        self.count += 1


class Stream:
    """An event stream read in a thread: its `event:` and `data:` lines, as they come."""

    def __init__(self, client: TestClient, job_id: str, last_event_id: str | None = None):
        self.lines: queue.Queue[str] = queue.Queue()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        args = (client, f"/v1/jobs/{job_id}/events", headers)
        threading.Thread(target=self._read, args=args, daemon=True).start()

    def _read(self, client: TestClient, path: str, headers: dict[str, str]) -> None:
        try:
            with client.stream("GET", path, headers=headers) as r:
                for line in r.iter_lines():
                    self.lines.put(line)
        except Exception:  # the TestClient closes its portal under it at the end
            pass

    def next_event(self, within: float = 30.0) -> tuple[str, str]:
        """(event name, data line) of the next event, which must come within `within` seconds
        (keep-alive comments do not count)."""
        deadline = time.monotonic() + within
        name = ""
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                return name, line[6:]


def _epoch(ctx: WorkerContext, job_id: str, owner: str, epoch: int, epochs: int) -> None:
    """What a worker does at an epoch end (worker/training/fitting.py `_progress`): write the
    history, then publish the epoch."""
    history = {"loss": [1.0 / (e + 1) for e in range(epoch)]}
    with ctx.session_factory() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == owner)
            .values(epoch=epoch, history=history)
        )
        session.commit()
    publish_epoch(ctx.settings, job_id, epoch, epochs, history)


def test_epochs_arrive_pushed_without_database_reads(
    client: TestClient, worker_ctx: WorkerContext
) -> None:
    job_id = submit(client, make_spec(epochs=3))
    owner = "test-worker/1"
    assert claim(worker_ctx, job_id, owner) is not None  # publishes `running`
    statements = Statements(client)
    stream = Stream(client, job_id)
    time.sleep(1.0)  # opened and subscribed (its reads on open are not per tick)
    _epoch(worker_ctx, job_id, owner, 1, 3)
    assert stream.next_event()[0] == "progress"
    opened = statements.count
    for epoch in (2, 3):
        time.sleep(1.0)  # four polling ticks each, with the database read every 0.25 s
        _epoch(worker_ctx, job_id, owner, epoch, 3)
        name, data = stream.next_event()
        assert name == "progress" and f'"epoch": {epoch}' in data and '"loss"' in data
    assert statements.count == opened  # no statement while following the epochs
    assert finish(worker_ctx, job_id, owner, status="succeeded")  # publishes the end
    name, data = stream.next_event()
    assert name == "done" and '"status": "succeeded"' in data
    assert statements.count - opened <= 2  # the end: one read of the job for `done`


def test_reconnect_reads_once_then_follows(client: TestClient, worker_ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=4))
    owner = "test-worker/2"
    assert claim(worker_ctx, job_id, owner) is not None
    for epoch in (1, 2, 3):
        _epoch(worker_ctx, job_id, owner, epoch, 4)
    stream = Stream(client, job_id, last_event_id="2")
    name, data = stream.next_event()  # the one epoch after Last-Event-ID, from the row
    assert name == "progress" and '"epoch": 3' in data
    time.sleep(1.0)
    _epoch(worker_ctx, job_id, owner, 4, 4)
    name, data = stream.next_event()
    assert name == "progress" and '"epoch": 4' in data
    assert finish(worker_ctx, job_id, owner, status="succeeded")
    assert stream.next_event()[0] == "done"


def test_a_cancelled_queued_job_ends_its_stream(client: TestClient) -> None:
    job_id = submit(client, make_spec())
    stream = Stream(client, job_id)
    time.sleep(1.0)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    name, data = stream.next_event()
    assert name == "done" and '"status": "cancelled"' in data


# --- the subscriber's connection ---------------------------------------------------------------


def _eventually(read: Callable[[], T | None], within: float = 10.0) -> T:
    deadline = time.monotonic() + within
    while (found := read()) is None:
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)
    return found


def _subscriber_id(settings: Settings) -> int | None:
    """The Redis client id of this process's subscriber on the settings' channel, if connected."""
    with redis.Redis.from_url(REDIS_URL) as r:
        clients = r.client_list(_type="pubsub")
    ids = [int(c["id"]) for c in clients if c.get("name") == subscriber_name(settings)]
    return ids[0] if ids else None


def test_a_killed_subscriber_connection_resyncs_the_streams(
    client: TestClient, worker_ctx: WorkerContext, pg_settings: Settings
) -> None:
    """Redis drops the subscriber's connection (CLIENT KILL) and the job's `status` message is
    lost meanwhile: the stream still ends, from the database, well before its 60 s safety read.
    Only this process's subscriber is killed: other tests share the Redis server."""
    job_id = submit(client, make_spec(epochs=2))
    owner = "test-worker/4"
    assert claim(worker_ctx, job_id, owner) is not None
    stream = Stream(client, job_id)
    subscriber = _eventually(lambda: _subscriber_id(pg_settings))
    _epoch(worker_ctx, job_id, owner, 1, 2)
    assert stream.next_event()[0] == "progress"  # followed over the push
    with redis.Redis.from_url(REDIS_URL) as r:
        assert r.client_kill_filter(_id=str(subscriber)) == 1
    quiet = pg_settings.model_copy(update={"progress_push": False})  # publishes nothing
    lost = WorkerContext(quiet, worker_ctx.session_factory, worker_ctx.store)
    assert finish(lost, job_id, owner, status="succeeded")
    name, data = stream.next_event(within=30)  # a correctness bound: the safety read is at 60 s
    assert name == "done" and '"status": "succeeded"' in data
    assert _eventually(lambda: _subscriber_id(pg_settings)) != subscriber  # subscribed again


class SilentProxy:
    """A TCP proxy to the test Redis whose open connections can be made to go silent, as a
    half-open one does (a host crash, a partition): nothing is closed, nothing gets through.
    Connections made afterwards pass."""

    def __init__(self) -> None:
        target = urlsplit(REDIS_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        self.url = target._replace(netloc=f"127.0.0.1:{port}").geturl()
        self.open: list[threading.Event] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.server.accept()
            except OSError:  # closed
                return
            up, silent = socket.create_connection(self.target), threading.Event()
            self.open.append(silent)
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst, silent), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, silent: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not silent.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def silence(self) -> None:
        for silent in self.open:
            silent.set()

    def close(self) -> None:
        self.server.close()


def test_a_silent_subscriber_connection_is_dropped_and_resynced(
    monkeypatch: pytest.MonkeyPatch, pg_settings: Settings, worker_ctx: WorkerContext
) -> None:
    """The subscriber's connection goes silent (half-open) and the job's `status` message is lost
    in it: the subscriber's pings go unanswered, it reconnects, and the stream ends from the
    database. Its timings are shortened here; they are 10 s and 30 s in production."""
    monkeypatch.setattr(progress, "PING_SECONDS", 0.3)
    monkeypatch.setattr(progress, "SILENT_SECONDS", 1.0)
    proxy = SilentProxy()
    settings = pg_settings.model_copy(update={"broker_url": proxy.url})  # the API's Redis
    try:
        with TestClient(create_app(settings)) as client:
            job_id = submit(client, make_spec(epochs=2))
            owner = "test-worker/5"
            assert claim(worker_ctx, job_id, owner) is not None
            stream = Stream(client, job_id)
            time.sleep(1.0)  # opened and subscribed
            _epoch(worker_ctx, job_id, owner, 1, 2)
            assert stream.next_event()[0] == "progress"  # followed over the push
            proxy.silence()
            assert finish(worker_ctx, job_id, owner, status="succeeded")  # published, lost
            name, data = stream.next_event(within=30)  # the safety read is at 60 s
            assert name == "done" and '"status": "succeeded"' in data
    finally:
        proxy.close()


def test_shutdown_closes_the_subscriber(pg_settings: Settings) -> None:
    async def start_hub(state: Any) -> ProgressHub | None:
        return hub_of(state)

    with TestClient(create_app(pg_settings)) as c:
        hub = c.portal.call(start_hub, c.app.state)  # type: ignore[union-attr, attr-defined]
        assert hub is not None
        _eventually(lambda: _subscriber_id(pg_settings))
    assert hub.task.done()
    _eventually(lambda: True if _subscriber_id(pg_settings) is None else None)
