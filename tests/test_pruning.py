"""Magnitude pruning: the cubic ramp, exact target sparsity, zeros that stay zero."""

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job
from worker.training.pruning import MagnitudePruning, magnitude_mask


def test_ramp_is_cubic_from_begin_to_end() -> None:
    cb = MagnitudePruning(0.8, begin_step=10, end_step=20, frequency=5)
    assert cb.sparsity_at(0) == cb.sparsity_at(9) == 0.0
    assert cb.sparsity_at(10) == 0.0
    assert cb.sparsity_at(15) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cb.sparsity_at(20) == cb.sparsity_at(1000) == 0.8


def test_mask_zeroes_exactly_the_smallest() -> None:
    w = np.array([[0.5, -0.1], [0.05, -2.0]], dtype="float32")
    assert np.array_equal(magnitude_mask(w, 0.5), [[1, 0], [0, 1]])
    assert magnitude_mask(np.random.rand(30, 10), 0.8).sum() == 60


def test_pruned_model_reaches_target_and_zeros_stay(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=4,
        pruning={"target_sparsity": 0.8, "begin_epoch": 1, "end_epoch": 3, "frequency": 10},
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["pruning"]["target_sparsity"] == 0.8
    assert model["pruning"]["sparsity"] == pytest.approx(0.8, abs=0.002)
    assert set(model["pruning"]["layers"]) == {"dense", "dense_1"}
    loaded = keras.saving.load_model(ctx.store.path(f"models/{model['id']}/model.keras"))
    for layer in loaded.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = np.asarray(layer.kernel)
            assert np.sum(kernel == 0) == round(0.8 * kernel.size)
    assert job["metrics"]["val_accuracy"] > 0.7


def test_pruning_survives_early_stopping_restore(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=30,
        early_stopping={"patience": 1, "min_delta": 0.3},
        pruning={"target_sparsity": 0.5, "end_epoch": 2},
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    assert client.get(f"/v1/models/{model_id}").json()["pruning"]["sparsity"] >= 0.49


def test_pruning_bounds_are_checked(client: TestClient) -> None:
    for pruning, loc in [
        ({"target_sparsity": 1.0}, ["pruning", "target_sparsity"]),
        ({"target_sparsity": 0.5, "begin_epoch": 3, "end_epoch": 2}, []),
        ({"target_sparsity": 0.5, "end_epoch": 99}, []),
        ({"target_sparsity": 0.5, "step": 1}, ["pruning", "step"]),
    ]:
        r = client.post("/v1/jobs/validate", json=make_spec(pruning=pruning))
        assert r.status_code == 422, pruning
        assert r.json()["error"]["details"][0]["loc"] == loc
