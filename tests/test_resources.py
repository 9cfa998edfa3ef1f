"""Queues by resource: a job's `resources` pick its queue, workers consume what their host has,
the API refuses what no worker seen can run and says what a queued job waits for."""

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import update

from service.app import create_app
from service.cli import build_parser, worker_command
from service.db import make_engine, make_session_factory, upgrade_database
from service.queue import queue_for, worker_queues
from service.rows import Job, Worker, utcnow
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import REDIS_URL, make_spec, sqlite_settings, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job
from worker.jobs.reconcile import reconcile

KTS = str(Path(sys.executable).parent / "kts")


def seen_worker(
    ctx: WorkerContext, node: str, queues: list[str], *, devices: int = 1, live: bool = True
) -> None:
    """A worker's announcement row, as worker/presence.py writes it."""
    last_seen = utcnow() if live else utcnow() - timedelta(days=1)
    with ctx.session_factory() as session:
        session.add(
            Worker(
                node=node, backend="jax", devices=[f"cpu:{i}" for i in range(devices)],
                accelerator="gpu" if any(".gpu" in q for q in queues) else "cpu",
                device_count=devices, queues=",".join(queues), last_seen=last_seen,
            )
        )  # fmt: skip
        session.commit()


def messages(settings: Settings) -> dict[str, str]:
    """job id -> queue of every message in the embedded broker's folder."""
    found = {}
    for path in (settings.broker_folder() / "queue").iterdir():
        queue = path.name.partition(".")[2].removesuffix(".msg")
        for job_id in _job_ids(path.read_text()):
            found[job_id] = queue
    return found


def _job_ids(text: str) -> list[str]:
    import re

    return re.findall(r"[0-9a-f]{32}", text)


def test_queue_names_follow_the_base_queue() -> None:
    s = Settings(queue="q7")
    assert queue_for(s, None) == queue_for(s, {"accelerator": "any", "devices": 1}) == "q7"
    assert queue_for(s, {"accelerator": "gpu", "devices": 1}) == "q7.gpu"
    assert queue_for(s, {"accelerator": "cpu", "devices": 4}) == "q7.cpu.x4"
    assert queue_for(s, {"accelerator": "any", "devices": 2}) == "q7.x2"
    assert worker_queues(s, "gpu", 2, True) == ["q7.gpu", "q7.gpu.x2", "q7", "q7.x2"]
    assert worker_queues(s, "cpu", 1, False) == ["q7.cpu"]


def test_kts_worker_flags_pick_its_queues(tmp_path: Path) -> None:
    s = sqlite_settings(tmp_path / "data", queue="q8")
    args = build_parser().parse_args(["worker", "--accelerator", "gpu", "--no-take-any"])
    command = worker_command(args, s, "gpu", 2)
    assert command[command.index("-Q") + 1] == "q8.gpu,q8.gpu.x2"
    plain = worker_command(build_parser().parse_args(["worker"]), s)
    assert plain[plain.index("-Q") + 1] == "q8.cpu,q8"  # takes `any` jobs by default
    asked = build_parser().parse_args(["worker", "--queues", "mine"])
    assert worker_command(asked, s, "gpu", 4)[command.index("-Q") + 1] == "mine"


def test_jobs_go_to_their_resources_queue_and_say_what_they_wait_for(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    plain = submit(client, make_spec())
    gpu = submit(client, make_spec(resources={"accelerator": "gpu"}))
    sent = messages(settings)
    assert sent[plain] == "kts" and sent[gpu] == "kts.gpu"
    read = client.get(f"/v1/jobs/{gpu}").json()
    assert read["resources"] == {"accelerator": "gpu", "devices": 1}
    assert read["waiting_for"] == "a gpu worker: none is live"
    seen_worker(ctx, "cpu@h/1", ["kts.cpu", "kts"])
    assert client.get(f"/v1/jobs/{plain}").json()["waiting_for"] is None
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["items"]}
    assert listed[gpu]["waiting_for"] == "a gpu worker: none is live"
    assert listed[plain]["waiting_for"] is None
    seen_worker(ctx, "gpu@h/2", ["kts.gpu"], live=False)  # seen, but not lately
    assert client.get(f"/v1/jobs/{gpu}").json()["waiting_for"] == "a gpu worker: none is live"
    seen_worker(ctx, "gpu@h/3", ["kts.gpu", "kts.gpu.x2"], devices=2)
    assert client.get(f"/v1/jobs/{gpu}").json()["waiting_for"] is None
    workers = {w["node"]: w for w in client.get("/v1/workers").json()["items"]}
    assert workers["gpu@h/3"]["queues"] == ["kts.gpu", "kts.gpu.x2"]
    assert workers["gpu@h/3"]["accelerator"] == "gpu" and workers["gpu@h/3"]["device_count"] == 2


def test_devices_above_the_largest_worker_seen_are_refused(
    client: TestClient, ctx: WorkerContext
) -> None:
    # no worker seen yet (a first start): accepted, and it waits
    first = submit(client, make_spec(resources={"accelerator": "gpu", "devices": 8}))
    assert client.get(f"/v1/jobs/{first}").json()["waiting_for"] == (
        "a gpu worker with at least 8 devices: none is live"
    )
    seen_worker(ctx, "gpu@h/1", ["kts.gpu", "kts.gpu.x2", "kts", "kts.x2"], devices=2)
    seen_worker(ctx, "gpu@old/1", worker_queues(Settings(), "gpu", 4, False), live=False)
    r = client.post("/v1/jobs", json=make_spec(resources={"accelerator": "gpu", "devices": 8}))
    assert r.status_code == 422
    detail = r.json()["error"]["details"][0]
    assert detail["loc"] == ["resources", "devices"] and "4" in detail["msg"]  # the dead one
    assert client.post("/v1/jobs", json=make_spec(resources={"devices": 4})).status_code == 422
    ok = make_spec(resources={"accelerator": "gpu", "devices": 4})
    assert client.post("/v1/jobs/validate", json=ok).status_code == 200
    uneven = make_spec(batch_size=30, resources={"accelerator": "gpu", "devices": 4})
    r = client.post("/v1/jobs", json=uneven)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["batch_size"]
    r = client.post("/v1/jobs", json=make_spec(resources={"accelerator": "tpu"}))
    assert r.status_code == 422


def test_the_reconciler_resends_a_job_to_its_own_queue(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    job_id = submit(client, make_spec(resources={"accelerator": "cpu", "devices": 2}))
    for path in (settings.broker_folder() / "queue").iterdir():
        path.unlink()  # the message is lost (e.g. a broker restart)
    with ctx.session_factory() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(enqueued_at=utcnow() - timedelta(hours=1))
        )
        session.commit()
    assert reconcile(ctx)["requeued_queued"] == 1
    assert messages(settings) == {job_id: "kts.cpu.x2"}


@pytest.mark.postgres
def test_the_reconciler_sends_again_only_what_a_live_worker_consumes(
    tmp_path: Path, pg_url: str
) -> None:
    queue = f"rc{uuid.uuid4().hex[:8]}"
    settings = sqlite_settings(
        tmp_path / "data", database_url=pg_url, broker_url=REDIS_URL, queue=queue
    )
    upgrade_database(pg_url)
    ctx = WorkerContext(
        settings,
        make_session_factory(make_engine(pg_url)),
        LocalStore(settings.resolved_artifact_dir()),
    )
    redis = Redis.from_url(REDIS_URL)
    try:
        with TestClient(create_app(settings)) as client:
            gpu = submit(client, make_spec(resources={"accelerator": "gpu"}))
            cpu = submit(client, make_spec(resources={"accelerator": "cpu"}))
        seen_worker(ctx, "cpu@h/1", [f"{queue}.cpu", queue])  # no GPU worker is live
        for _ in range(2):
            with ctx.session_factory() as session:
                session.execute(
                    update(Job)
                    .where(Job.id.in_([gpu, cpu]))
                    .values(enqueued_at=utcnow() - timedelta(hours=1))
                )
                session.commit()
            assert reconcile(ctx)["requeued_queued"] == 1
        assert redis.llen(f"{queue}.gpu") == 1  # the submit's message only: not one a round
        assert redis.llen(f"{queue}.cpu") == 3
    finally:
        redis.delete(f"{queue}.gpu", f"{queue}.cpu")
        redis.close()


def test_batch_predictions_and_optimize_jobs_route_the_same_way(
    client: TestClient, ctx: WorkerContext, settings: Settings
) -> None:
    job_id = submit(client, make_spec(epochs=1))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    ds = _digits_dataset(client)
    r = client.post(
        f"/v1/models/{model_id}/batch-predictions",
        json={"dataset": {"id": ds}, "resources": {"accelerator": "gpu"}},
    )
    assert r.status_code == 202, r.text
    batch = r.json()["id"]
    r = client.post(
        f"/v1/models/{model_id}/optimize",
        json={"weights": "float16", "resources": {"accelerator": "cpu"}},
    )
    assert r.status_code == 202, r.text
    optimize = r.json()["id"]
    sent = messages(settings)
    assert sent[batch] == "kts.gpu" and sent[optimize] == "kts.cpu"
    read = client.get(f"/v1/jobs/{batch}").json()
    assert read["resources"]["accelerator"] == "gpu"
    assert read["waiting_for"] == "a gpu worker: none is live"
    two = {"dataset": {"id": ds}, "resources": {"accelerator": "gpu", "devices": 2}}
    assert client.post(f"/v1/models/{model_id}/batch-predictions", json=two).status_code == 422


def _digits_dataset(client: TestClient) -> str:
    import io

    import numpy as np
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    buf = io.BytesIO()
    np.savez(buf, X=X[:50].astype("float32"), y=y[:50])
    r = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_for(predicate: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_cpu_worker_announces_itself_and_takes_only_what_it_can_run(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path / "data", queue="res")
    upgrade_database(settings.resolved_database_url())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KTS_")},
        "KTS_BACKEND": os.environ.get("KTS_BACKEND", "jax"),
        "KTS_DATA_DIR": str(settings.data_dir),
        "KTS_QUEUE": "res",
        "KTS_RECONCILE_SECONDS": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [KTS, "worker", "--accelerator", "cpu"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with TestClient(create_app(settings)) as client:
            # known before its first job: the API can tell what waits for whom
            found = wait_for(lambda: client.get("/v1/workers").json()["items"])
            assert found[0]["accelerator"] == "cpu" and found[0]["device_count"] == 1
            assert found[0]["queues"] == ["res", "res.cpu"]
            gpu = submit(client, make_spec(resources={"accelerator": "gpu"}))
            cpu = submit(client, make_spec(epochs=1, resources={"accelerator": "cpu"}))
            anyone = submit(client, make_spec(epochs=1))
            for job_id in (cpu, anyone):
                done = wait_for(lambda j=job_id: _ended(client, j))
                assert done["status"] == "succeeded", done
            waiting = client.get(f"/v1/jobs/{gpu}").json()
            assert waiting["status"] == "queued"
            assert waiting["waiting_for"] == "a gpu worker: none is live"
            r = client.post("/v1/jobs", json=make_spec(resources={"devices": 2}))
            assert r.status_code == 422 and "Expected devices <= 1" in r.text
            # the jobs ran in the process that announced itself: one row, kept seen
            assert [w["node"] for w in client.get("/v1/workers").json()["items"]] == [
                found[0]["node"]
            ]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()


def _ended(client: TestClient, job_id: str) -> dict[str, Any] | None:
    job = dict(client.get(f"/v1/jobs/{job_id}").json())
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def test_a_gpu_worker_on_a_host_without_gpus_exits_naming_why(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()  # no nvidia-smi on the PATH
    env = {**os.environ, "PATH": str(empty), "KTS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [KTS, "worker", "--accelerator", "gpu"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no NVIDIA GPU" in done.stderr
