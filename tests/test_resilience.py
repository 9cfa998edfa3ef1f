"""Workers that die, jobs that do not: leases, checkpoints, resume, reconciler, hand-back."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from service.rows import Job, utcnow
from service.settings import Settings
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lease import claim
from worker.jobs.lifecycle import run_job
from worker.jobs.reconcile import reconcile
from worker.training.checkpoint import Checkpoints


def job(client: TestClient, job_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_live_lease_drops_redelivered_messages(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec())
    first = claim(ctx, job_id, "node-a/1")
    assert first is not None and first.attempts == 1
    assert claim(ctx, job_id, "node-b/2") is None  # held by a live worker: dropped
    assert run_job(ctx, job_id, "node-b/2") == "skipped"
    with ctx.session_factory() as session:  # node-a dies: its lease runs out
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert run_job(ctx, job_id, "node-b/2") == "succeeded"
    done = job(client, job_id)
    assert done["attempts"] == 2 and done["status"] == "succeeded"


def test_too_many_lost_workers_fail_the_job(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec())
    for n in range(ctx.settings.max_attempts):
        assert claim(ctx, job_id, f"node/{n}") is not None
        with ctx.session_factory() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    lease_expires_at=utcnow() - timedelta(seconds=1),
                    enqueued_at=utcnow() - timedelta(hours=1),
                )
            )
            session.commit()
    counts = reconcile(ctx)
    assert counts["worker_lost"] == 1
    failed = job(client, job_id)
    assert failed["status"] == "failed" and failed["error"]["code"] == "worker_lost"


def test_reconciler_requeues_lost_messages(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec())
    assert reconcile(ctx)["requeued_queued"] == 0  # just enqueued: leave it
    with ctx.session_factory() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(enqueued_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    assert reconcile(ctx)["requeued_queued"] == 1
    queue = ctx.settings.broker_folder() / "queue"
    assert sum(job_id in p.read_text() for p in queue.iterdir()) >= 1  # a real message


def test_killed_worker_resumes_from_its_last_checkpoint(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    job_id = submit(
        client, make_spec(epochs=40, batch_size=8, seed=None, early_stopping={"patience": 100})
    )
    code = textwrap.dedent(f"""
        from worker.context import worker_context
        from worker.jobs.lifecycle import run_job
        run_job(worker_context(), {job_id!r}, "doomed/1")
    """)
    env = {**os.environ, "KTS_DATA_DIR": str(settings.data_dir), "KTS_REQUIRE_AUTH": "false"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        wait_for(lambda: job(client, job_id)["progress"]["epoch"] >= 3, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-epoch, no chance to clean up
        proc.wait()
    killed = job(client, job_id)
    assert killed["status"] == "running"
    checkpoint = Checkpoints(ctx.store, job_id).load()
    assert checkpoint is not None and checkpoint["epoch"] >= 2  # may lag progress by one
    with ctx.session_factory() as session:  # the dead worker's lease runs out
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                lease_expires_at=utcnow() - timedelta(seconds=1),
                enqueued_at=utcnow() - timedelta(hours=1),
            )
        )
        session.commit()
    assert reconcile(ctx)["requeued_expired"] == 1
    assert run_job(ctx, job_id, "rescuer/2") == "succeeded"
    done = job(client, job_id)
    assert done["attempts"] == 2
    assert done["resumed_from_epoch"] == checkpoint["epoch"] >= 2
    assert len(done["history"]["loss"]) == 40 and done["progress"]["epoch"] == 40
    diagnostics = client.get(f"/v1/jobs/{job_id}/diagnostics").json()["epochs"]
    assert [d["epoch"] for d in diagnostics] == list(range(1, 41))
    assert Checkpoints(ctx.store, job_id).load() is None  # cleaned up after success


def test_graceful_release_checkpoints_and_hands_back(
    client: TestClient, ctx: WorkerContext
) -> None:
    job_id = submit(client, make_spec(epochs=400, batch_size=8))
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(run_job(ctx, job_id, "node/7")))
    thread.start()
    wait_for(lambda: job(client, job_id)["progress"]["epoch"] >= 2)
    from worker.jobs.lease import request_release

    assert request_release(ctx, "node") == 1
    thread.join(timeout=60)
    assert result == ["released"]
    released = job(client, job_id)
    assert released["status"] == "queued" and released["attempts"] == 0
    state = Checkpoints(ctx.store, job_id).load()
    assert state is not None and state["epoch"] >= 2
    client.post(f"/v1/jobs/{job_id}/cancel")  # and the job can still be cancelled
    assert job(client, job_id)["status"] == "cancelled"


def test_api_answers_503_when_the_database_is_down(tmp_path: Any) -> None:
    from service.app import create_app

    s = Settings(
        data_dir=tmp_path,
        require_auth=False,  # type: ignore[arg-type]
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none",
    )
    with TestClient(create_app(s)) as c:
        assert c.get("/readyz").status_code == 503
        r = c.get("/v1/jobs")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
