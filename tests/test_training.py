"""The worker's job runner, called in-process on a real SQLite database: real (tiny) training."""

import io
import math
import threading
import time
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.sampler import Predictor
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def test_job_trains_stores_model_and_history(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=4))
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert job["progress"] == {"epoch": 4, "epochs": 4}
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert len(job["history"][key]) == 4
    assert job["history"]["loss"][-1] < job["history"]["loss"][0]
    assert job["metrics"]["val_accuracy"] > 0.7
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["job_id"] == job_id and model["backend"] == keras.backend.backend()
    assert model["summary"]["total_params"] == 2667
    assert [layer["class_name"] for layer in model["summary"]["layers"]] == [
        "Normalization",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    # the validate summary and the trained model's summary agree
    planned = client.post("/v1/jobs/validate", json=make_spec(epochs=4)).json()["summary"]
    assert planned["total_params"] == model["summary"]["total_params"]
    # a redelivered message for a finished job does nothing
    assert run_job(ctx, job_id) == "skipped"
    assert client.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1


def test_same_seed_trains_the_same_weights(client: TestClient, ctx: WorkerContext) -> None:
    a, b = submit(client, make_spec(epochs=2)), submit(client, make_spec(epochs=2))
    run_job(ctx, a)
    run_job(ctx, b)
    ha = client.get(f"/v1/jobs/{a}").json()["history"]["loss"]
    hb = client.get(f"/v1/jobs/{b}").json()["history"]["loss"]
    assert ha == pytest.approx(hb, rel=1e-5)


def upload_regression(client: TestClient, rows: int = 300) -> str:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 3)).astype("float32")
    y = (X @ np.array([1.5, -2.0, 0.5])).astype("float32")
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    r = client.post("/v1/datasets", files={"file": ("reg.npz", buf.getvalue())})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_diverging_loss_fails_with_diverged(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=3,
        dataset={"id": upload_regression(client)},
        optimizer={"type": "sgd", "learning_rate": 1e3},
        model={
            "layers": [
                {"type": "dense", "units": 64, "activation": "relu"},
                {"type": "dense", "units": 1},
            ]
        },
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "failed"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "diverged"
    assert "learning rate" in job["error"]["message"] and "clipping" in job["error"]["message"]
    assert job["model_id"] is None


def test_max_runtime_fails_with_timeout(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=2000, max_runtime_seconds=1, batch_size=8))
    started = time.monotonic()
    assert run_job(ctx, job_id) == "failed"
    assert time.monotonic() - started < 30
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["error"]["code"] == "timeout" and job["status"] == "failed"


def test_cancel_stops_a_running_job(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=2000, batch_size=8))
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(run_job(ctx, job_id)))
    thread.start()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running"
    thread.join(timeout=30)
    assert result == ["cancelled"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["progress"]["epoch"] < 2000
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_early_stopping_stops_and_restores(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=200, early_stopping={"patience": 1, "min_delta": 0.5}))
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    val = job["history"]["val_loss"]
    assert len(val) < 200
    # patience 1: the best epoch is the one before the last, and its weights were restored
    assert job["metrics"]["val_loss"] == val[-2] != val[-1]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (
            {"type": "exponential", "decay_steps": 51, "decay_rate": 0.1},
            lambda step: 0.01 * 0.1 ** (step / 51),
        ),
        (
            {"type": "power", "decay_steps": 51, "decay_rate": 1.0},
            lambda step: 0.01 / (1 + step / 51),
        ),
        (
            {"type": "piecewise", "boundaries": [60], "values": [0.01, 0.001]},
            lambda step: 0.01 if step <= 60 else 0.001,
        ),
    ],
)
def test_schedules_are_recorded_per_epoch(
    client: TestClient, ctx: WorkerContext, schedule: dict[str, Any], expected: Any
) -> None:
    spec = make_spec(
        epochs=3, optimizer={"type": "sgd", "learning_rate": 0.01}, lr_schedule=schedule
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    lrs = client.get(f"/v1/jobs/{job_id}").json()["history"]["learning_rate"]
    steps = math.ceil(1797 * 0.9 / 32)  # 51 batches per epoch
    assert lrs == pytest.approx([expected(steps * (e + 1)) for e in range(3)], rel=1e-4)


def test_one_cycle_rises_then_falls(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=10,
        optimizer={"type": "sgd", "learning_rate": 0.01, "momentum": 0.9},
        lr_schedule={"type": "one_cycle", "max_learning_rate": 0.05},
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    lrs = client.get(f"/v1/jobs/{job_id}").json()["history"]["learning_rate"]
    peak = int(np.argmax(lrs))
    assert 2 <= peak <= 5 and max(lrs) == pytest.approx(0.05, rel=0.15)
    assert lrs[-1] < 0.005 / 10
    # momentum cycles inversely: lowest where the rate peaks, back at 0.9 at the end
    momentum = client.get(f"/v1/jobs/{job_id}").json()["history"]["momentum"]
    assert int(np.argmin(momentum)) == peak
    assert min(momentum) == pytest.approx(0.85, abs=0.01)
    assert momentum[-1] == pytest.approx(0.9)


def test_performance_schedule_reduces_on_plateau(client: TestClient, ctx: WorkerContext) -> None:
    # a tiny rate makes val_loss plateau, so the rate must halve after such epochs
    spec = make_spec(
        epochs=4,
        optimizer={"type": "sgd", "learning_rate": 1e-6},
        lr_schedule={"type": "performance", "factor": 0.5, "patience": 0},
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    lrs, val = job["history"]["learning_rate"], job["history"]["val_loss"]
    expected, lr, best = [], 1e-6, math.inf
    for v in val:  # ReduceLROnPlateau's rule, recorded before each epoch-end reduction
        expected.append(lr)
        if v < best - 1e-4:
            best = v
        else:
            lr *= 0.5
    assert lrs == pytest.approx(expected, rel=1e-5)
    assert lrs[-1] < lrs[0]


def test_regression_on_uploaded_csv(client: TestClient, ctx: WorkerContext) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=300)
    rows = ["a,b,c,target"] + [f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(X, y, strict=True)]
    ds = client.post(
        "/v1/datasets",
        files={"file": ("reg.csv", "\n".join(rows).encode())},
        data={"target": "target"},
    ).json()
    assert ds["task"] == "regression" and ds["input_shape"] == [3]
    spec = make_spec(
        dataset={"id": ds["id"]},
        epochs=30,
        optimizer={"type": "adam", "learning_rate": 0.01},
        model={
            "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dropout", "rate": 0.1},
                {"type": "dense", "units": 1},
            ]
        },
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert "mae" in job["metrics"] and job["metrics"]["val_loss"] < 1.0
    r = client.post(
        f"/v1/models/{job['model_id']}/predict",
        json={"instances": X[:2].tolist(), "mc_samples": 50, "seed": 1},
    )
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    assert set(pred) == {"mean", "std"} and len(pred["mean"]) == 1
    assert abs(pred["mean"][0] - y[0]) < 1.5


def test_mc_dropout_keeps_batch_norm_in_inference(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=2))
    run_job(ctx, job_id)
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    row_key = f"models/{model_id}/model.keras"
    predictor = Predictor.load(ctx.store.path(row_key), "classification")
    from service.datasets.arrays import load_builtin

    X = np.asarray(load_builtin("digits").X[:20])
    alone = predictor.sample(X[:1], 200, seed=5).mean(axis=0)[0]
    crowd = predictor.sample(X, 200, seed=5).mean(axis=0)[0]
    assert np.abs(alone - crowd).max() < 0.05  # batch composition does not change a row
    bn = next(
        layer
        for layer in predictor.model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    predictor.sample(X, 100, seed=1)
    assert np.array_equal(before, keras.ops.convert_to_numpy(bn.moving_mean))
    # stochastic across seeds, identical for one seed, plain prediction deterministic
    a, b = predictor.sample(X, 30, seed=1), predictor.sample(X, 30, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, predictor.sample(X, 30, seed=2))
    assert a.std(axis=0).max() > 0
    assert np.array_equal(predictor.predict(X), predictor.predict(X))


@pytest.mark.parametrize("loss", ["mae", "huber", "mean_squared_error"])
def test_regression_losses_train(client: TestClient, ctx: WorkerContext, loss: str) -> None:
    spec = make_spec(
        dataset={"id": upload_regression(client)},
        epochs=20,
        loss=loss,
        metrics=["mae", "rmse"],
        optimizer={"type": "adam", "learning_rate": 0.01},
        model={
            "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dense", "units": 1},
            ]
        },
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    history = client.get(f"/v1/jobs/{job_id}").json()["history"]
    assert {"mae", "rmse", "val_mae", "val_rmse"} <= set(history)
    assert history["val_mae"][-1] < history["val_mae"][0] / 2


def test_a_database_outage_leaves_the_job_to_its_lease(
    client: TestClient, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart mid-job is not the job's fault: it stays running (its lease lapses
    and the reconciler queues it again) instead of failing as `training_error`."""
    from sqlalchemy.exc import OperationalError

    from worker.jobs import kinds, lifecycle  # kinds registers the real runners first

    assert "train" in lifecycle.RUNNERS, kinds

    def database_gone(run: object) -> str:
        raise OperationalError("SELECT 1", {}, Exception("the database system is shutting down"))

    job_id = submit(client, make_spec())
    monkeypatch.setitem(lifecycle.RUNNERS, "train", database_gone)
    assert run_job(ctx, job_id) == "database_unavailable"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "running" and job["error"] is None
