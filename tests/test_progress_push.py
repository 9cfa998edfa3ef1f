"""Progress pushed over Redis pub/sub (service/jobs/progress.py): an open event stream gets each
epoch from the worker's publish and reads no database per tick; on reconnect with
Last-Event-ID it reads the row once, then follows the push."""

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from service.app import create_app
from service.db import make_engine, make_session_factory, upgrade_database
from service.jobs.progress import publish_epoch
from service.rows import Job
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import REDIS_URL, make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lease import claim, finish

pytestmark = pytest.mark.postgres


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

    def next_event(self) -> tuple[str, str]:
        """(event name, data line) of the next event."""
        name = ""
        while True:
            line = self.lines.get(timeout=30)
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
