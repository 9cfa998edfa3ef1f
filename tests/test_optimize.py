"""Optimize jobs: batch-norm folding (exact), pruning and smaller weights, with their report."""

import hashlib
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def trained(client: TestClient, ctx: WorkerContext, **spec: Any) -> dict[str, Any]:
    job_id = submit(client, make_spec(epochs=3, **spec))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    return dict(client.get(f"/v1/models/{model_id}").json())


def optimized(
    client: TestClient, ctx: WorkerContext, model_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    r = client.post(f"/v1/models/{model_id}/optimize", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "optimize" and job["status"] == "queued"
    assert run_job(ctx, job["id"]) == "succeeded", client.get(f"/v1/jobs/{job['id']}").json()
    job = client.get(f"/v1/jobs/{job['id']}").json()
    return dict(client.get(f"/v1/models/{job['model_id']}").json())


def plain(client: TestClient, model_id: str, X: list[Any]) -> np.ndarray:
    r = client.post(f"/v1/models/{model_id}/predict", json={"instances": X})
    return np.asarray(r.json()["predictions"])


BN_FIRST = {
    "layers": [  # BN after a linear dense (folds backwards), then BN after ELU (forwards)
        {"type": "dense", "units": 32, "use_bias": False},
        {"type": "batch_normalization"},
        {"type": "activation", "activation": "elu"},
        {"type": "dense", "units": 16, "activation": "elu"},
        {"type": "batch_normalization"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
}


@pytest.mark.parametrize("model", [None, BN_FIRST])
def test_fold_batch_norm_matches_the_source(
    client: TestClient, ctx: WorkerContext, model: dict[str, Any] | None
) -> None:
    source = trained(client, ctx, **({"model": model} if model else {}))
    path = ctx.store.path(f"models/{source['id']}/model.keras")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    new = optimized(client, ctx, source["id"], {"fold_batch_norm": True})
    assert new["job_id"] is None and new["base_model_id"] == source["id"]
    classes = [layer["class_name"] for layer in new["summary"]["layers"]]
    assert "BatchNormalization" not in classes
    report = new["optimization"]
    assert report["steps"] == ["fold_batch_norm"]
    assert report["max_abs_output_difference"] <= 1e-5
    assert report["accuracy"]["before"] == report["accuracy"]["after"]
    assert set(report["single_row_latency_ms"]) == {"before", "after"}
    X = load_builtin("digits").X[:16].tolist()
    assert np.abs(plain(client, new["id"], X) - plain(client, source["id"], X)).max() <= 1e-4
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # source unchanged


def test_unfoldable_batch_norm_is_422(client: TestClient, ctx: WorkerContext) -> None:
    source = trained(
        client,
        ctx,
        model={
            "layers": [
                {"type": "dense", "units": 16, "activation": "elu"},
                {"type": "batch_normalization"},
                {"type": "activation", "activation": "tanh"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        },
    )
    r = client.post(f"/v1/models/{source['id']}/optimize", json={"fold_batch_norm": True})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["fold_batch_norm"]
    no_bn = trained(
        client, ctx, model={"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}
    )
    r = client.post(f"/v1/models/{no_bn['id']}/optimize", json={"fold_batch_norm": True})
    assert r.status_code == 422
    assert client.post(f"/v1/models/{no_bn['id']}/optimize", json={}).status_code == 422
    assert client.post("/v1/models/nope/optimize", json={"weights": "int8"}).status_code == 404
    assert client.get("/v1/jobs", params={"status": "queued"}).json()["items"] == []


@pytest.mark.parametrize("weights", ["float16", "int8"])
def test_smaller_weights(client: TestClient, ctx: WorkerContext, weights: str) -> None:
    source = trained(
        client,
        ctx,
        model={
            "layers": [
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        },
    )
    new = optimized(client, ctx, source["id"], {"weights": weights})
    report = new["optimization"]
    assert report["steps"] == [f"{weights}_weights"]
    assert report["file_size_bytes"]["after"] < 0.75 * report["file_size_bytes"]["before"]
    assert abs(report["accuracy"]["after"] - report["accuracy"]["before"]) <= 0.02
    X = load_builtin("digits").X[:4].tolist()
    assert plain(client, new["id"], X).shape == (4, 10)


def test_prune_and_fine_tune(client: TestClient, ctx: WorkerContext) -> None:
    source = trained(client, ctx)
    new = optimized(
        client,
        ctx,
        source["id"],
        {
            "prune": {"target_sparsity": 0.7, "epochs": 2, "learning_rate": 1e-3},
            "prune_below": 1e-4,
        },
    )
    assert new["pruning"]["sparsity"] >= 0.7 - 1e-3
    report = new["optimization"]
    assert report["steps"] == ["prune_and_fine_tune", "prune_below"]
    assert report["accuracy"]["after"] >= report["accuracy"]["before"] - 0.1
