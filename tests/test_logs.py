"""Logs operators can search: JSON-lines process logs with request, tenant and job ids, each
job's own log lines at GET /v1/jobs/{job_id}/logs, the client and `kts jobs logs`, and the
Celery task-events switch of `kts worker`."""

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from kts_client import AsyncClient, Client
from service.app import create_app
from service.auth import create_key
from service.cli import build_parser, worker_command
from service.db import make_engine, make_session_factory, upgrade_database
from service.logs.config import JsonLines
from service.logs.middleware import RequestIds
from service.queue import make_celery
from service.rows import Job, JobLogLine, utcnow
from service.settings import Settings
from tests.conftest import make_spec, sqlite_settings, submit
from tests.test_client import LiveService
from tests.test_end_to_end import free_port
from tests.test_training import upload_regression
from worker.context import WorkerContext
from worker.jobs.joblog import JobLog
from worker.jobs.lease import claim, request_release
from worker.jobs.lifecycle import run_job
from worker.jobs.reconcile import reconcile
from worker.training.checkpoint import Checkpoints

BIN = Path(sys.executable).parent
TINY = {
    "dataset": {"builtin": "iris"},
    "epochs": 2,
    "seed": 1,
    "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
}


def _logs(client: TestClient, job_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}/logs", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """This process's log lines, formatted as `kts serve` and `kts worker` write them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --- request ids --------------------------------------------------------------------------------


def test_every_answer_echoes_a_safe_request_id(client: TestClient, settings: Settings) -> None:
    given = {"X-Request-ID": "ops-4f2a.check:1"}
    as_json = {**given, "content-type": "application/json"}
    too_large = b"x" * (settings.max_body_bytes + 1)
    for r in (
        client.get("/healthz", headers=given),
        client.get("/v1/jobs/nope", headers=given),  # 404
        client.get("/v1/jobs", params={"limit": 0}, headers=given),  # 422
        client.post("/v1/jobs", content=b"{", headers=as_json),  # 400
        client.post("/v1/jobs/validate", content=too_large, headers=given),  # 413
    ):
        assert r.headers["x-request-id"] == "ops-4f2a.check:1", (r.status_code, r.text)
    seen = set()
    for bad in ("has space", "x" * 65, "semi;colon", 'quote"d', ""):
        r = client.get("/healthz", headers={"X-Request-ID": bad})
        fresh = r.headers["x-request-id"]
        assert fresh != bad and len(fresh) == 32 and int(fresh, 16) >= 0
        seen.add(fresh)
    assert len(seen) == 5  # a fresh one each time
    assert client.get("/healthz").headers["x-request-id"] not in seen


def test_an_unhandled_error_answers_500_with_its_request_id() -> None:
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(RequestIds)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "bug-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "bug-1"
    assert r.json()["error"]["code"] == "internal_error" and "bug-1" in r.json()["error"]["message"]


@pytest.mark.slow
def test_kts_serve_writes_json_lines_with_ids(tmp_path: Path) -> None:
    """The real `kts serve` (API + embedded Celery worker): every log line is JSON, access lines
    carry the echoed request id, the tenant and the job id, and the worker's lines the job's."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env["KTS_BACKEND"] = os.environ.get("KTS_BACKEND", "jax")
    err = tmp_path / "serve.err"
    http = httpx.Client(timeout=120)  # this host may be slow: the first requests import a lot
    with err.open("wb") as stderr:
        server = subprocess.Popen(
            [str(BIN / "kts"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            _wait(lambda: _ready(base), 120)
            job = http.post(f"{base}/v1/jobs", json=TINY).json()
            _wait(lambda: http.get(f"{base}/v1/jobs/{job['id']}").json()["status"] != "queued", 180)
            asked = http.get(f"{base}/v1/jobs/{job['id']}", headers={"X-Request-ID": "trace-77"})
            replaced = http.get(f"{base}/v1/jobs/x", headers={"X-Request-ID": "no spaces!"})
            _wait(
                lambda: http.get(f"{base}/v1/jobs/{job['id']}").json()["status"] == "succeeded",
                300,
            )
            _wait(lambda: '"event": "succeeded"' in err.read_text(), 30)
        finally:
            server.terminate()
            server.wait(timeout=60)
            http.close()
    assert asked.headers["x-request-id"] == "trace-77"
    fresh = replaced.headers["x-request-id"]
    assert replaced.status_code == 404 and fresh != "no spaces!" and len(fresh) == 32
    lines = [json.loads(t) for t in err.read_text().splitlines() if t.startswith("{")]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    mine = next(line for line in access if line.get("request_id") == "trace-77")
    assert mine["job_id"] == job["id"] and mine["tenant"] == "default" and mine["status"] == 200
    assert mine["method"] == "GET" and mine["path"] == f"/v1/jobs/{job['id']}"
    assert any(line.get("request_id") == fresh and line["status"] == 404 for line in access)
    worker = [
        line for line in lines if line.get("job_id") == job["id"] and "request_id" not in line
    ]
    assert {"started", "succeeded"} <= {line.get("event") for line in worker}
    assert all(line["tenant"] == "default" for line in worker)
    assert any(line["logger"].startswith("celery") for line in lines)  # Celery's own, as JSON


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.5)


# --- a job's own log ------------------------------------------------------------------------------


def test_a_training_job_logs_start_epochs_and_success(
    client: TestClient, ctx: WorkerContext, captured: io.StringIO
) -> None:
    job_id = submit(client, make_spec(epochs=3))
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    found = _logs(client, job_id)
    assert found["status"] == "succeeded" and found["next_after"] == 5
    lines = found["lines"]
    assert [x["event"] for x in lines] == ["started", "epoch", "epoch", "epoch", "succeeded"]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["extra"]["attempt"] == 1 and lines[0]["extra"]["kind"] == "train"
    assert lines[0]["extra"]["worker"]
    for epoch, line in enumerate(lines[1:4], start=1):
        assert line["extra"]["epoch"] == epoch and line["extra"]["epochs"] == 3
        assert line["extra"]["metrics"]["loss"] == pytest.approx(job["history"]["loss"][epoch - 1])
        assert line["message"].startswith(f"epoch {epoch}/3: ")
    assert lines[4]["extra"]["model_id"] == job["model_id"]
    # tailing: after a seq, a page at a time
    page = _logs(client, job_id, after=2, limit=2)
    assert [x["seq"] for x in page["lines"]] == [3, 4] and page["next_after"] == 4
    assert _logs(client, job_id, after=5) == {**found, "lines": [], "next_after": 5}
    assert _logs(client, job_id, level="warning")["lines"] == []
    text = client.get(f"/v1/jobs/{job_id}/logs", params={"format": "text", "after": 1})
    assert text.headers["content-type"].startswith("text/plain")
    assert text.headers["x-next-after"] == "5"
    assert [t.split(" ", 2)[2] for t in text.text.splitlines()] == [x["message"] for x in lines[1:]]
    # the same lines in the worker's process log, as JSON with the job's ids
    logged = [json.loads(t) for t in captured.getvalue().splitlines()]
    ours = [x for x in logged if x["logger"] == "worker.jobs.joblog"]
    assert [x["event"] for x in ours] == ["started", "succeeded"]  # epochs at DEBUG there
    assert all(x["job_id"] == job_id and x["tenant"] == "default" for x in ours)
    assert ours[-1]["model_id"] == job["model_id"]


def test_a_failed_job_logs_its_traceback_but_its_error_names_no_path(
    client: TestClient, ctx: WorkerContext
) -> None:
    buf = io.BytesIO()
    np.savez(buf, X=np.random.rand(60, 4).astype("float32"), y=np.arange(60) % 3)
    dataset = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()["id"]
    job_id = submit(client, {**TINY, "dataset": {"id": dataset}})
    ctx.store.delete(f"datasets/{dataset}/X.npy")  # the disk lost the file under a queued job
    assert run_job(ctx, job_id) == "failed"
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert error["code"] == "training_error"
    assert str(ctx.store.root) not in error["message"] and "Traceback" not in error["message"]
    lines = _logs(client, job_id)["lines"]
    assert [x["event"] for x in lines] == ["started", "failed"]
    failed = lines[-1]
    assert failed["level"] == "error" and failed["extra"]["code"] == "training_error"
    trace = failed["extra"]["traceback"]
    assert trace.startswith("Traceback") and "FileNotFoundError" in trace
    assert str(ctx.store.root) in trace  # the operator's view has the whole cause
    assert _logs(client, job_id, level="error")["lines"] == [failed]
    text = client.get(f"/v1/jobs/{job_id}/logs", params={"format": "text"}).text
    assert "failed (training_error)" in text and "    Traceback" in text


def test_a_diverging_job_logs_its_epochs_and_why(client: TestClient, ctx: WorkerContext) -> None:
    layers = [{"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "units": 1}]
    spec = make_spec(
        epochs=3,
        dataset={"id": upload_regression(client)},
        optimizer={"type": "sgd", "learning_rate": 1e3},
        model={"layers": layers},
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "failed"
    lines = _logs(client, job_id)["lines"]
    assert lines[0]["event"] == "started" and lines[-1]["event"] == "failed"
    assert lines[-1]["extra"]["code"] == "diverged" and "traceback" not in lines[-1]["extra"]
    epochs = [x for x in lines if x["event"] == "epoch"]
    assert epochs and epochs[-1]["extra"]["metrics"]["loss"] is None  # NaN stored as null
    assert "loss=nan" in epochs[-1]["message"]


def test_hand_back_resume_and_cancel_are_logged(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=400, batch_size=8))

    def run_in_thread(owner: str) -> tuple[threading.Thread, list[str]]:
        result: list[str] = []
        thread = threading.Thread(target=lambda: result.append(run_job(ctx, job_id, owner)))
        thread.start()
        return thread, result

    def epochs_logged() -> int:
        return sum(x["event"] == "epoch" for x in _logs(client, job_id, limit=1000)["lines"])

    thread, result = run_in_thread("node/7")
    _wait(lambda: epochs_logged() >= 2, 300)
    assert request_release(ctx, "node") == 1
    thread.join(timeout=120)
    assert result == ["released"]
    first = _logs(client, job_id, limit=1000)["lines"]
    assert first[-1]["event"] == "handed_back" and first[-1]["extra"]["worker"] == "node/7"
    checkpoint = Checkpoints(ctx.store, job_id).load()
    assert checkpoint is not None
    thread, result = run_in_thread("other/8")
    _wait(lambda: epochs_logged() >= len(first), 300)  # it trains on
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    thread.join(timeout=120)
    assert result == ["cancelled"]
    second = _logs(client, job_id, after=first[-1]["seq"], limit=1000)["lines"]
    assert [x["event"] for x in second[:2]] == ["started", "resumed"]
    assert second[0]["extra"]["worker"] == "other/8"
    assert second[1]["extra"]["epoch"] == checkpoint["epoch"]
    assert second[-1]["event"] == "cancelled"


def test_a_job_whose_workers_keep_dying_logs_why(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, TINY)
    for n in range(ctx.settings.max_attempts):
        assert claim(ctx, job_id, f"node/{n}") is not None
        with ctx.session_factory() as session:  # the worker died: its lease ran out
            expired = utcnow() - timedelta(hours=1)
            values = {"lease_expires_at": expired, "enqueued_at": expired}
            session.execute(update(Job).where(Job.id == job_id).values(**values))
            session.commit()
    assert reconcile(ctx)["worker_lost"] == 1
    (line,) = _logs(client, job_id)["lines"]
    assert line["event"] == "failed" and line["extra"] == {"code": "worker_lost"}


def test_delete_removes_the_lines_and_other_tenants_see_none(
    settings: Settings, ctx: WorkerContext
) -> None:
    app = create_app(settings.model_copy(update={"require_auth": True}))
    with app.state.session_factory() as session:
        alice, bob = create_key(session, "alice"), create_key(session, "bob")
        session.commit()
    a, b = ({"Authorization": f"Bearer {k}"} for k in (alice, bob))
    with TestClient(app) as client:
        job_id = client.post("/v1/jobs", json=TINY, headers=a).json()["id"]
        assert run_job(ctx, job_id) == "succeeded"
        assert len(client.get(f"/v1/jobs/{job_id}/logs", headers=a).json()["lines"]) == 4
        hidden = client.get(f"/v1/jobs/{job_id}/logs", headers=b)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "not_found"
        assert client.get(f"/v1/jobs/{job_id}/logs").status_code == 401
        assert client.delete(f"/v1/jobs/{job_id}", headers=a).status_code == 204
        assert client.get(f"/v1/jobs/{job_id}/logs", headers=a).status_code == 404
    with ctx.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(JobLogLine)) == 0


@pytest.mark.parametrize("bad", [{"after": -1}, {"limit": 0}, {"limit": 1001}, {"level": "x"}])
def test_bad_query_parameters_are_422(client: TestClient, bad: dict[str, Any]) -> None:
    job_id = submit(client, TINY)
    r = client.get(f"/v1/jobs/{job_id}/logs", params=bad)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == [
        "query",
        next(iter(bad)),
    ]


def _bounded_log_on(settings: Settings) -> None:
    """A job's log stays bounded: past the limit, its oldest epoch lines give way."""
    upgrade_database(settings.resolved_database_url())
    settings = settings.model_copy(update={"job_log_max_lines": 10})
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    ctx = WorkerContext(settings, factory, None)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        job_id = submit(client, TINY)
        log = JobLog(ctx, job_id)
        log.info("started", "started", attempt=1, worker="w/1")
        for epoch in range(1, 31):
            log.epoch(epoch, 30, {"loss": [float("nan") if epoch == 30 else 1.0 / epoch]})
        JobLog(ctx, job_id).info("succeeded", "succeeded")  # a new writer reads seq again
        lines = _logs(client, job_id)["lines"]
        events = [x["event"] for x in lines]
        assert events[:2] == ["started", "truncated"] and events[-1] == "succeeded"
        epochs = [x["extra"]["epoch"] for x in lines if x["event"] == "epoch"]
        assert epochs == list(range(22, 31))  # the newest ones
        assert len(lines) == 12 and lines[-1]["seq"] == 33
        assert lines[-2]["extra"]["metrics"]["loss"] is None
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    with factory() as session:  # the database's cascade removed them
        assert session.scalar(select(func.count()).select_from(JobLogLine)) == 0


def test_the_log_is_bounded_on_sqlite(tmp_path: Path) -> None:
    _bounded_log_on(sqlite_settings(tmp_path / "data"))


@pytest.mark.postgres
def test_the_log_is_bounded_on_postgres(tmp_path: Path, pg_url: str) -> None:
    _bounded_log_on(sqlite_settings(tmp_path / "data", database_url=pg_url))


def test_a_failing_log_write_does_not_fail_the_job(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, TINY)
    log = JobLog(ctx, "0" * 32)  # no such job: the foreign key refuses every line
    log.info("started", "started")
    log.epoch(1, 2, {"loss": [1.0]})
    assert run_job(ctx, job_id) == "succeeded"  # and a real job still logs
    assert len(_logs(client, job_id)["lines"]) == 4


# --- client, CLI and the worker's switches ------------------------------------------------------


def test_client_and_cli_tail_a_job(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path / "data")
    with LiveService(settings) as live, Client(live.url) as kts:
        job = kts.submit(TINY)
        env = {**os.environ, "KTS_URL": live.url}
        followed = subprocess.run(
            [str(BIN / "kts"), "jobs", "logs", job.id, "--follow"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert followed.returncode == 0, followed.stderr
        messages = [t.split(" ", 2)[2] for t in followed.stdout.splitlines()]
        whole = kts.job_logs(job.id)
        assert messages == [x.message for x in whole.lines]
        assert messages[0].startswith("train job started") and messages[-1].startswith("succeeded")
        tail = kts.job_logs(job.id, after=2)
        assert [x.seq for x in tail.lines] == [3, 4] and tail.next_after == 4
        as_json = subprocess.run(
            [str(BIN / "kts"), "jobs", "logs", job.id, "--json", "--level", "info"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert [json.loads(t)["seq"] for t in as_json.stdout.splitlines()] == [1, 2, 3, 4]

        async def read() -> list[int]:
            async with AsyncClient(live.url) as aio:
                return [x.seq for x in (await aio.job_logs(job.id, after=3)).lines]

        assert asyncio.run(read()) == [4]


def test_kts_worker_events_turns_on_celery_task_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KTS_TASK_EVENTS", "false")  # restored (unset) after the test
    settings = sqlite_settings(tmp_path / "data")
    plain = worker_command(build_parser().parse_args(["worker"]), settings)
    assert "--task-events" not in plain and os.environ["KTS_TASK_EVENTS"] == "false"
    args = build_parser().parse_args(["worker", "--events", "--loglevel", "warning"])
    command = worker_command(args, settings)
    assert "--task-events" in command and "--loglevel=WARNING" in command
    assert os.environ["KTS_TASK_EVENTS"] == "true"  # the worker's own app reads it
    conf = make_celery(Settings(data_dir=tmp_path / "data")).conf
    assert conf.worker_send_task_events and conf.task_send_sent_event
    off = make_celery(settings.model_copy(update={"task_events": False})).conf
    assert not off.worker_send_task_events and not off.task_send_sent_event
    # celery itself accepts the command line `kts worker --events` runs
    celery = subprocess.run(
        [*command[: command.index("worker") + 1], "--help"], capture_output=True, text=True
    )
    assert celery.returncode == 0 and "--task-events" in celery.stdout
