"""GET /metrics: parsed as Prometheus does, while real jobs run and real predictions are made."""

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.app import create_app
from service.auth import create_key
from service.datasets.arrays import load_builtin
from service.db import make_engine, make_session_factory, upgrade_database
from service.rows import Job, Worker, utcnow
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import REDIS_URL, make_spec, sqlite_settings, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TINY = {
    "epochs": 2,
    "model": {
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]
    },
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Every scrape reads the database afresh, and one model fits in the predictor cache."""
    s = sqlite_settings(tmp_path / "data", metrics_cache_seconds=0, model_cache_size=1)
    upgrade_database(s.resolved_database_url())
    return s


def scrape(client: TestClient, **headers: str) -> Samples:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def jobs(samples: Samples, status: str) -> float | None:
    return value(samples, "kts_jobs", status=status, kind="train")


def test_job_figures_follow_a_real_job(client: TestClient, ctx: WorkerContext) -> None:
    before = scrape(client)
    assert (jobs(before, "queued"), jobs(before, "succeeded")) == (0, 0)
    job_id = submit(client, make_spec(**TINY))
    queued = scrape(client)
    assert (jobs(queued, "queued"), jobs(queued, "succeeded")) == (1, 0)
    assert value(queued, "kts_queue_depth", queue="kts", source="database") == 1
    assert run_job(ctx, job_id) == "succeeded"
    done = scrape(client)
    assert (jobs(done, "queued"), jobs(done, "succeeded")) == (0, 1)
    assert value(done, "kts_queue_depth", queue="kts", source="database") == 0
    assert value(done, "kts_epochs_total", kind="train") == 2
    assert value(done, "kts_metrics_source_up", source="database") == 1
    duration = {"kind": "train", "outcome": "succeeded"}
    assert value(done, "kts_job_duration_seconds_count", **duration) == 1
    assert value(done, "kts_job_duration_seconds_sum", **duration) > 0  # type: ignore[operator]
    assert value(done, "kts_job_duration_seconds_bucket", le="+Inf", **duration) == 1
    assert value(done, "kts_epochs_per_second") == 0  # nothing is running
    with ctx.session_factory() as session:  # the same job seen as if still running
        row = session.scalars(select(Job).where(Job.id == job_id)).one()
        last_epoch = row.history["epoch_seconds"][-1]
        row.status, row.finished_at = "running", None
        session.commit()
    assert last_epoch and value(scrape(client), "kts_epochs_per_second") == pytest.approx(
        1 / last_epoch
    )


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    ids = [uuid.uuid4().hex for _ in range(2)]
    for job_id in ids:
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert client.get(f"/no/such/{ids[0]}").status_code == 404
    scrape(client)
    samples = scrape(client)
    route = {"handler": "/v1/jobs/{job_id}", "method": "GET"}
    assert value(samples, "http_requests_total", status="404", **route) == 2
    assert value(samples, "http_request_duration_seconds_count", status="404", **route) == 2
    assert value(samples, "http_requests_total", handler="none", method="GET", status="404") == 1
    handlers = {dict(labels).get("handler") for _, labels in samples}
    assert "/metrics" not in handlers and not any(ids[0] in str(h) for h in handlers)


def trained(client: TestClient, ctx: WorkerContext) -> str:
    job_id = submit(client, make_spec(**TINY))
    assert run_job(ctx, job_id) == "succeeded"
    return str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


def test_predictions_and_the_model_cache(client: TestClient, ctx: WorkerContext) -> None:
    first, second = trained(client, ctx), trained(client, ctx)
    X = load_builtin("digits").X[:4].tolist()
    url = f"/v1/models/{first}/predict"
    assert client.post(url, json={"instances": X}).status_code == 200
    assert client.post(url, json={"instances": X, "mc_samples": 10, "seed": 1}).status_code == 200
    samples = scrape(client)
    assert value(samples, "kts_model_cache_misses_total") == 1
    assert value(samples, "kts_model_cache_hits_total") == 1
    for mode in ("plain", "mc"):
        labels = {"model_id": first, "mode": mode}
        assert value(samples, "kts_predict_duration_seconds_count", **labels) == 1
    assert value(samples, "kts_mc_samples_total") == 4 * 10
    assert value(samples, "kts_mc_seconds_total") > 0  # type: ignore[operator]
    assert value(samples, "kts_model_cache_models") == 1
    assert value(samples, "kts_model_cache_bytes") > 0  # type: ignore[operator]
    # a cache of one model: predicting with the second evicts the first, and its series
    assert client.post(f"/v1/models/{second}/predict", json={"instances": X}).status_code == 200
    samples = scrape(client)
    latency = {dict(labels).get("model_id") for name, labels in samples if "predict" in name}
    assert latency == {second}
    assert value(samples, "kts_model_cache_evictions_total") == 1
    assert value(samples, "kts_model_cache_misses_total") == 2


def test_keys_are_required_when_keys_are_on(tmp_path: Path) -> None:
    app = create_app(sqlite_settings(tmp_path, require_auth=True))
    upgrade_database(app.state.settings.resolved_database_url())
    with app.state.session_factory() as session:
        key = create_key(session, "acme")  # any tenant's key may read the metrics
        session.commit()
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = client.get("/metrics", headers=headers)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
        samples = scrape(client, Authorization=f"Bearer {key}")
    assert value(samples, "kts_metrics_source_up", source="database") == 1


def test_readings_are_cached_between_scrapes(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_cache_seconds": 3600}))
    with TestClient(app) as client:
        first = scrape(client)
        submit(client, make_spec())
        second = scrape(client)
    assert jobs(first, "queued") == jobs(second, "queued") == 0  # the database was not read again
    # the process's own figures are live
    posted = {"handler": "/v1/jobs", "method": "POST", "status": "202"}
    assert value(second, "http_requests_total", **posted) == 1


def test_many_apps_in_one_process_keep_their_own_metrics(settings: Settings) -> None:
    apps = [create_app(settings) for _ in range(3)]
    with TestClient(apps[0]) as one:
        one.get("/v1/jobs")
    for app in apps:
        with TestClient(app) as client:
            samples = scrape(client)
        listed = {"handler": "/v1/jobs", "method": "GET", "status": "200"}
        assert value(samples, "http_requests_total", **listed) == (1 if app is apps[0] else None)


def test_an_unreachable_database_leaves_the_process_metrics(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "kts.sqlite"
    s = sqlite_settings(tmp_path, database_url=f"sqlite:///{missing}", metrics_cache_seconds=0)
    with TestClient(create_app(s)) as client:
        client.get("/healthz")
        samples = scrape(client)
    assert value(samples, "kts_metrics_source_up", source="database") == 0
    assert not any(name == "kts_jobs" for name, _ in samples)
    assert value(samples, "http_requests_total", handler="/healthz", method="GET", status="200")


def test_metrics_do_not_import_keras(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.db import upgrade_database
        from service.settings import Settings
        s = Settings(data_dir={str(tmp_path)!r}, require_auth=False)
        upgrade_database(s.resolved_database_url())
        with TestClient(create_app(s)) as c:
            assert c.get("/metrics").status_code == 200
        print("HEAVY", [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules])
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


# --- PostgreSQL and Redis -----------------------------------------------------------------------


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """A queue name of its own on the test Redis, its keys deleted afterwards."""
    name = f"kts-metrics-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(name, *(f"{name}\x06\x16{step}" for step in (3, 6, 9)))
    client.close()


@pytest.mark.postgres
def test_collector_on_postgres_and_redis(tmp_path: Path, pg_url: str, redis_queue: str) -> None:
    extra: dict[str, Any] = {"database_url": pg_url, "broker_url": REDIS_URL}
    s = sqlite_settings(tmp_path, queue=redis_queue, metrics_cache_seconds=0, **extra)
    upgrade_database(pg_url)
    ctx = WorkerContext(
        s, make_session_factory(make_engine(pg_url)), LocalStore(s.resolved_artifact_dir())
    )
    with TestClient(create_app(s)) as client:
        assert value(scrape(client), "kts_queue_depth", queue=redis_queue, source="redis") == 0
        job_id = submit(client, make_spec(**TINY))
        queued = scrape(client)
        assert value(queued, "kts_queue_depth", queue=redis_queue, source="redis") == 1
        assert jobs(queued, "queued") == 1
        assert run_job(ctx, job_id) == "succeeded"  # in-process: the message stays in Redis
        done = scrape(client)
    duration = {"kind": "train", "outcome": "succeeded"}
    assert jobs(done, "succeeded") == 1 and jobs(done, "queued") == 0
    assert value(done, "kts_job_duration_seconds_count", **duration) == 1
    seconds = value(done, "kts_job_duration_seconds_sum", **duration)
    assert seconds is not None and 0 < seconds < 3600
    assert value(done, "kts_job_duration_seconds_bucket", le="3600.0", **duration) == 1
    assert value(done, "kts_epochs_total", kind="train") == 2
    for source in ("database", "redis"):
        assert value(done, "kts_metrics_source_up", source=source) == 1


@pytest.mark.postgres
def test_queue_depth_of_each_live_queue(tmp_path: Path, pg_url: str, redis_queue: str) -> None:
    """One sample per queue a live worker consumes, and the base, gpu and cpu queues (a
    backlog with no such worker live shows: scaling from zero); no other queue."""
    extra: dict[str, Any] = {"database_url": pg_url, "broker_url": REDIS_URL}
    s = sqlite_settings(tmp_path, queue=redis_queue, metrics_cache_seconds=0, **extra)
    upgrade_database(pg_url)
    gpu, gpu4, cpu, cpu2 = (f"{redis_queue}{t}" for t in (".gpu", ".gpu.x4", ".cpu", ".cpu.x2"))
    with make_session_factory(make_engine(pg_url))() as session:
        session.add(
            Worker(
                node="gpu-host/1", backend="jax", devices=["gpu:0"], accelerator="gpu",
                device_count=1, queues=gpu, last_seen=utcnow(),
            )
        )  # fmt: skip
        session.commit()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.lpush(gpu, b"a", b"b")
        client.lpush(f"{gpu}\x06\x163", b"c")  # a priority-3 message of the same queue
        client.lpush(cpu, b"d")  # no live worker consumes it: counted all the same
        client.lpush(cpu2, b"e")  # neither: a multi-device queue is counted once consumed
        with TestClient(create_app(s)) as api:
            samples = scrape(api)
    finally:
        client.delete(gpu, f"{gpu}\x06\x163", cpu, cpu2)
        client.close()
    depth = {q: value(samples, "kts_queue_depth", queue=q, source="redis") for q in (gpu, gpu4)}
    assert depth == {gpu: 3, gpu4: None}
    assert value(samples, "kts_queue_depth", queue=redis_queue, source="redis") == 0
    assert value(samples, "kts_queue_depth", queue=cpu, source="redis") == 1
    assert value(samples, "kts_queue_depth", queue=cpu2, source="redis") is None
