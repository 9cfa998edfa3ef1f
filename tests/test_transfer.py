"""Transfer learning: reuse a trained model's layers, frozen then fine-tuned, base untouched."""

import hashlib
import io
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

HEAD = [{"type": "dense", "units": 1, "activation": "sigmoid"}]


def trained_a(client: TestClient, ctx: WorkerContext) -> dict[str, Any]:
    job_id = submit(client, make_spec(epochs=3))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    return client.get(f"/v1/models/{model_id}").json()


def binary_digits(client: TestClient) -> str:
    """Task B: the same images, labelled 'digit >= 5' (a new 2-class head)."""
    digits = load_builtin("digits")
    buf = io.BytesIO()
    np.savez(buf, X=digits.X, y=(digits.y >= 5).astype("int64"))
    r = client.post("/v1/datasets", files={"file": ("b.npz", buf.getvalue())})
    return str(r.json()["id"])


def sha(ctx: WorkerContext, model: dict[str, Any]) -> str:
    path = ctx.store.path(f"models/{model['id']}/model.keras")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(ctx: WorkerContext, model_id: str) -> dict[str, list[np.ndarray]]:
    loaded = keras.saving.load_model(
        ctx.store.path(f"models/{model_id}/model.keras"), compile=False
    )
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in loaded.layers}


def test_frozen_transfer_keeps_base_and_reused_weights(
    client: TestClient, ctx: WorkerContext
) -> None:
    a = trained_a(client, ctx)
    before = sha(ctx, a)
    spec = make_spec(
        dataset={"id": binary_digits(client)},
        epochs=2,
        base_model={"model_id": a["id"]},
        model={"layers": HEAD},
    )
    planned = client.post("/v1/jobs/validate", json=spec).json()["summary"]
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()
    job = client.get(f"/v1/jobs/{job_id}").json()
    b = client.get(f"/v1/models/{job['model_id']}").json()
    assert b["base_model_id"] == a["id"]
    assert sha(ctx, a) == before  # the stored base model is byte-identical

    names_a = [layer["name"] for layer in a["summary"]["layers"]]
    names_b = [layer["name"] for layer in b["summary"]["layers"]]
    assert names_b[:-1] == names_a[:-1] and len(names_b) == len(names_a)
    wa, wb = weights(ctx, a["id"]), weights(ctx, b["id"])
    for name in names_a[:-1]:  # frozen: not one weight moved
        for x, y in zip(wa[name], wb[name], strict=True):
            assert np.array_equal(x, y), name
    assert b["summary"]["trainable_params"] == 33  # only the new head: 32 inputs + bias
    for key in ("total_params", "trainable_params", "non_trainable_params"):
        assert planned[key] == b["summary"][key]
    assert [x["trainable"] for x in b["summary"]["layers"]] == [False] * 4 + [True]


def test_phases_train_the_head_then_fine_tune(client: TestClient, ctx: WorkerContext) -> None:
    a = trained_a(client, ctx)
    before = sha(ctx, a)
    spec = make_spec(
        dataset={"id": binary_digits(client)},
        base_model={"model_id": a["id"], "reuse_layers": 3},
        model={"layers": [{"type": "dense", "units": 8, "activation": "elu"}, *HEAD]},
        optimizer={"type": "adam", "learning_rate": 0.01},
        phases=[
            {"epochs": 2, "freeze_base": True},
            {"epochs": 2, "freeze_base": False, "learning_rate": 1e-4},
        ],
    )
    job_id = submit(client, spec)
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["epochs"] == 4
    assert run_job(ctx, job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert len(job["history"]["loss"]) == 4
    assert job["history"]["learning_rate"] == pytest.approx([0.01, 0.01, 1e-4, 1e-4])
    b = client.get(f"/v1/models/{job['model_id']}").json()
    assert all(x["trainable"] for x in b["summary"]["layers"])  # last phase: unfrozen
    dense_a = a["summary"]["layers"][1]["name"]
    moved = weights(ctx, b["id"])[dense_a][0]
    assert not np.array_equal(moved, weights(ctx, a["id"])[dense_a][0])  # fine-tuned
    assert sha(ctx, a) == before


@pytest.mark.parametrize(
    ("base", "loc"),
    [
        ({"model_id": "nope"}, ["base_model", "model_id"]),
        ({"model_id": "X", "clone": False}, ["base_model", "clone"]),
        ({"model_id": "X", "reuse_layers": 99}, ["base_model", "reuse_layers"]),
        ({"model_id": "X", "reuse_layers": 0}, ["base_model", "reuse_layers"]),
    ],
)
def test_bad_base_models_are_422(
    client: TestClient, ctx: WorkerContext, base: dict[str, Any], loc: list[Any]
) -> None:
    a = trained_a(client, ctx)
    base = {**base, "model_id": a["id"] if base["model_id"] == "X" else base["model_id"]}
    r = client.post("/v1/jobs", json=make_spec(base_model=base, model={"layers": HEAD}))
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == loc
    if loc[-1] == "clone":
        assert "never" in r.json()["error"]["details"][0]["msg"]


def test_base_model_for_other_inputs_is_422(client: TestClient, ctx: WorkerContext) -> None:
    a = trained_a(client, ctx)  # digits: 64 inputs
    r = client.post(
        "/v1/jobs",
        json=make_spec(
            dataset={"builtin": "iris"}, base_model={"model_id": a["id"]}, model={"layers": HEAD}
        ),
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == [
        "base_model",
        "model_id",
    ]


def test_freeze_base_without_a_base_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/jobs/validate", json=make_spec(phases=[{"epochs": 1, "freeze_base": True}])
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == []
