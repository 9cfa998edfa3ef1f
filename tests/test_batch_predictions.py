"""Batch predictions: score a stored data set on the worker, page, sort, download."""

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.datasets.arrays import load_builtin
from service.rows import Job, utcnow
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def upload(client: TestClient, X: np.ndarray, y: np.ndarray) -> str:
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    r = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def model_id(client: TestClient, ctx: WorkerContext) -> str:
    job_id = submit(client, make_spec(epochs=2))
    assert run_job(ctx, job_id) == "succeeded"
    return str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


def scored(
    client: TestClient, ctx: WorkerContext, model_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    r = client.post(f"/v1/models/{model_id}/batch-predictions", json=body)
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["status"] == "queued" and created["progress"]["rows_done"] == 0
    assert run_job(ctx, created["id"]) == "succeeded"
    return dict(client.get(f"/v1/batch-predictions/{created['id']}").json())


def test_mc_scoring_pages_sorts_and_downloads(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    digits = load_builtin("digits")
    ds = upload(client, digits.X, digits.y)
    done = scored(client, ctx, model_id, {"dataset": {"id": ds}, "mc_samples": 30, "seed": 1})
    assert done["status"] == "succeeded"
    assert done["progress"] == {"rows_done": 1797, "rows": 1797}
    summary = done["summary"]
    assert summary["rows"] == 1797 and sum(summary["class_counts"].values()) == 1797
    assert set(summary["predictive_entropy"]["quantiles"]) >= {"0.5", "0.9"}
    url = f"/v1/batch-predictions/{done['id']}/results"

    page = client.get(url, params={"offset": 10, "limit": 5}).json()
    assert page["total"] == 1797 and [p["row"] for p in page["predictions"]] == list(range(10, 15))
    first = page["predictions"][0]
    assert set(first) >= {"row", "mean", "std", "class", "predictive_entropy", "mutual_information"}
    assert first["class"] == int(np.argmax(first["mean"]))

    # the summary's most uncertain rows are those with the highest entropy
    top = client.get(url, params={"sort": "-predictive_entropy", "limit": 20}).json()
    entropies = [p["predictive_entropy"] for p in top["predictions"]]
    assert entropies == sorted(entropies, reverse=True)
    listed = [(u["row"], u["predictive_entropy"]) for u in summary["most_uncertain"][:20]]
    assert [row for row, _ in listed] == [p["row"] for p in top["predictions"]]
    everything = pq.read_table(io.BytesIO(client.get(url, params={"format": "parquet"}).content))
    assert everything.num_rows == 1797
    assert max(everything.column("predictive_entropy").to_pylist()) == pytest.approx(listed[0][1])

    text = client.get(url, params={"format": "csv"}).text
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) == 1 + 1797
    assert rows[0][:3] == ["row", "mean_0", "mean_1"] and "predictive_entropy" in rows[0]
    assert client.get(url, params={"sort": "colour"}).status_code == 422


def test_plain_scoring_matches_predict(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    digits = load_builtin("digits")
    ds = upload(client, digits.X[:300], digits.y[:300])
    done = scored(client, ctx, model_id, {"dataset": {"id": ds}})
    page = client.get(f"/v1/batch-predictions/{done['id']}/results", params={"limit": 3}).json()[
        "predictions"
    ]
    online = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": digits.X[:3].tolist()}
    ).json()["predictions"]
    assert np.allclose([p["prediction"] for p in page], online, atol=1e-6)


def test_refused_before_queueing(client: TestClient, ctx: WorkerContext, model_id: str) -> None:
    wrong = upload(client, np.random.rand(20, 10).astype("float32"), np.arange(20) % 2)
    url = f"/v1/models/{model_id}/batch-predictions"
    for body, loc in [
        ({"dataset": {"id": wrong}}, ["dataset", "id"]),
        ({"dataset": {"id": "nope"}}, ["dataset", "id"]),
        ({"dataset": {"id": wrong}, "mc_samples": 10**6}, ["dataset", "id"]),
        ({"dataset": {}}, ["dataset", "id"]),
        ({"dataset": {"id": wrong}, "extra": 1}, ["extra"]),
    ]:
        r = client.post(url, json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["details"][0]["loc"] == loc
    assert client.get("/v1/batch-predictions").json()["items"] == []
    assert (
        client.post(
            "/v1/models/nope/batch-predictions", json={"dataset": {"id": wrong}}
        ).status_code
        == 404
    )


def test_cancelled_run_leaves_no_results(
    client: TestClient, ctx: WorkerContext, model_id: str
) -> None:
    rng = np.random.default_rng(0)
    ds = upload(
        client, rng.random((60_000, 64), dtype=np.float32) * 16, rng.integers(0, 10, 60_000)
    )
    r = client.post(
        f"/v1/models/{model_id}/batch-predictions", json={"dataset": {"id": ds}, "mc_samples": 200}
    )
    batch_id = r.json()["id"]
    results = client.get(f"/v1/batch-predictions/{batch_id}/results")
    assert results.status_code == 409  # not ready yet
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(run_job(ctx, batch_id)))
    thread.start()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/batch-predictions/{batch_id}").json()["progress"]["rows_done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post(f"/v1/batch-predictions/{batch_id}/cancel").status_code == 202
    thread.join(timeout=60)
    assert outcome == ["cancelled"]
    state = client.get(f"/v1/batch-predictions/{batch_id}").json()
    assert state["status"] == "cancelled" and state["summary"] is None
    assert 0 < state["progress"]["rows_done"] < 60_000
    assert client.get(f"/v1/batch-predictions/{batch_id}/results").status_code == 409
    folder = ctx.store.path(f"batch_predictions/{batch_id}")
    assert not folder.exists() or list(folder.iterdir()) == []


def test_listing_is_newest_first(client: TestClient, ctx: WorkerContext, model_id: str) -> None:
    digits = load_builtin("digits")
    ds = upload(client, digits.X[:50], digits.y[:50])
    ids = [
        client.post(
            f"/v1/models/{model_id}/batch-predictions", json={"dataset": {"id": ds}}
        ).json()["id"]
        for _ in range(3)
    ]
    listed = client.get("/v1/batch-predictions").json()["items"]
    assert [b["id"] for b in listed] == ids[::-1]
    assert client.get("/v1/batch-predictions/nope").status_code == 404


def _kill_mid_run(client: TestClient, batch_id: str, settings: Any, parts: int) -> None:
    """Run the batch prediction in a worker process and SIGKILL it once `parts` chunks are
    stored."""
    code = textwrap.dedent(f"""
        from worker.context import worker_context
        from worker.jobs.lifecycle import run_job
        run_job(worker_context(), {batch_id!r}, "doomed/1")
    """)
    env = {**os.environ, "KTS_DATA_DIR": str(settings.data_dir), "KTS_REQUIRE_AUTH": "false"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    folder = settings.resolved_artifact_dir() / f"batch_predictions/{batch_id}/parts"
    try:
        deadline = time.monotonic() + 120
        while not (folder.exists() and len(list(folder.glob("*.parquet"))) >= parts):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_killed_batch_prediction_resumes_after_its_stored_chunks(
    client: TestClient, ctx: WorkerContext, model_id: str, settings: Any
) -> None:
    rng = np.random.default_rng(0)
    ds = upload(
        client, rng.random((16_000, 64), dtype=np.float32) * 16, rng.integers(0, 10, 16_000)
    )
    body = {"dataset": {"id": ds}, "mc_samples": 200, "seed": 7}  # 2,000-row chunks: 8 of them
    batch_id = client.post(f"/v1/models/{model_id}/batch-predictions", json=body).json()["id"]
    _kill_mid_run(client, batch_id, settings, parts=2)
    parts = ctx.store.path(f"batch_predictions/{batch_id}/parts")
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert 2 <= len(kept) < 8
    with ctx.session_factory() as session:  # the dead worker's lease runs out
        session.execute(
            update(Job)
            .where(Job.id == batch_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    assert run_job(ctx, batch_id, "rescuer/2") == "succeeded"
    assert not parts.exists() or not list(parts.iterdir())
    logs = client.get(f"/v1/jobs/{batch_id}/logs").text
    assert f"resumed after {len(kept)} stored chunks" in logs
    # the same request run once, without a kill, gives the same rows and the same summary
    whole = scored(client, ctx, model_id, body)
    resumed = client.get(f"/v1/batch-predictions/{batch_id}").json()
    assert resumed["summary"] == whole["summary"] and resumed["progress"]["rows_done"] == 16_000
    a = pq.read_table(ctx.store.path(f"batch_predictions/{batch_id}/results.parquet"))
    b = pq.read_table(ctx.store.path(f"batch_predictions/{whole['id']}/results.parquet"))
    assert a.equals(b)
