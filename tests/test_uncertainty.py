"""Uncertainty quality: the scoring functions, and the object stored with a dropout model."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job
from worker.training.uncertainty import classification_scores, regression_scores


def test_perfect_and_known_scores() -> None:
    labels = np.array([0, 1, 2, 1])
    perfect = np.eye(3)[labels]
    s = classification_scores(perfect, labels)
    assert s == pytest.approx({"accuracy": 1.0, "nll": 0.0, "brier": 0.0, "ece": 0.0}, abs=1e-9)
    # all rows predicted [0.7, 0.3] for class 0; half are right: ECE = |0.5 - 0.7|
    probs = np.tile([0.7, 0.3], (4, 1))
    s = classification_scores(probs, np.array([0, 1, 0, 1]))
    assert s["accuracy"] == 0.5 and s["ece"] == pytest.approx(0.2)
    assert s["brier"] == pytest.approx(((0.3**2 + 0.3**2) + (0.7**2 + 0.7**2)) / 2)
    assert s["nll"] == pytest.approx(-(np.log(0.7) + np.log(0.3)) / 2)
    # one sigmoid unit counts as two classes
    assert classification_scores(np.array([[0.9], [0.2]]), np.array([1, 0]))["accuracy"] == 1.0


def test_regression_coverage_and_nll() -> None:
    rng = np.random.default_rng(0)
    draws = rng.normal(0.0, 1.0, size=(2000, 500, 1))
    y = rng.normal(0.0, 1.0, size=500)
    s = regression_scores(draws, y)
    assert s["coverage_90"] == pytest.approx(0.9, abs=0.04)
    assert s["nll"] == pytest.approx(0.5 * np.log(2 * np.pi) + 0.5, abs=0.15)
    assert s["rmse"] == pytest.approx(1.0, abs=0.1)


def test_dropout_model_stores_uncertainty(client: TestClient, ctx: WorkerContext) -> None:
    job_id = submit(client, make_spec(epochs=3, uncertainty_samples=50))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    u = client.get(f"/v1/models/{model_id}").json()["uncertainty"]
    assert u["split"] == "validation" and u["mc_samples"] == 50 and u["rows"] == 179
    for kind in ("plain", "mc_dropout"):
        assert set(u[kind]) == {"accuracy", "nll", "brier", "ece"}
        assert 0.5 < u[kind]["accuracy"] <= 1 and 0 <= u[kind]["ece"] < 0.5
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert u["plain"]["accuracy"] == pytest.approx(job["metrics"]["val_accuracy"], abs=1e-6)


def test_model_without_dropout_has_no_uncertainty(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        epochs=1, model={"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]}
    )
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    assert client.get(f"/v1/models/{model_id}").json()["uncertainty"] is None
    r = client.post(
        f"/v1/models/{model_id}/predict", json={"instances": [[0] * 64], "mc_samples": 10}
    )
    assert r.status_code == 422 and "dropout" in r.json()["error"]["message"]
