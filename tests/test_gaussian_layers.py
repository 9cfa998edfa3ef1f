"""The two Gaussian regularisers train through the API; gaussian_dropout is sampled by
Monte-Carlo predictions like dropout, gaussian_noise is not (it acts only while training)."""

import numpy as np
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

HIDDEN = {"type": "dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"}
OUT = {"type": "dense", "units": 10, "activation": "softmax"}


def _trained(client: TestClient, ctx: WorkerContext, noise: dict[str, object]) -> dict:
    job_id = submit(client, make_spec(model={"layers": [HIDDEN, noise, OUT]}))
    assert run_job(ctx, job_id) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return client.get(f"/v1/models/{job['model_id']}").json()


def test_gaussian_dropout_trains_and_is_sampled(client: TestClient, ctx: WorkerContext) -> None:
    model = _trained(client, ctx, {"type": "gaussian_dropout", "rate": 0.3})
    assert [layer["class_name"] for layer in model["summary"]["layers"]][-2] == "GaussianDropout"
    assert model["uncertainty"] is not None  # measured with MC samples, like dropout
    rows = load_builtin("digits").X[:2].tolist()
    body = {"instances": rows, "mc_samples": 50, "seed": 3}
    first = client.post(f"/v1/models/{model['id']}/predict", json=body)
    assert first.status_code == 200, first.text
    again = client.post(f"/v1/models/{model['id']}/predict", json=body).json()
    other = client.post(f"/v1/models/{model['id']}/predict", json={**body, "seed": 4}).json()
    stds = np.array([p["std"] for p in first.json()["predictions"]])
    assert stds.max() > 0  # the draws differ: the layer is sampled
    assert first.json()["predictions"] == again["predictions"]  # same seed, same draws
    assert first.json()["predictions"] != other["predictions"]


def test_gaussian_noise_trains_and_is_not_sampled(client: TestClient, ctx: WorkerContext) -> None:
    model = _trained(client, ctx, {"type": "gaussian_noise", "stddev": 0.5})
    assert [layer["class_name"] for layer in model["summary"]["layers"]][-2] == "GaussianNoise"
    assert model["uncertainty"] is None
    rows = load_builtin("digits").X[:2].tolist()
    r = client.post(f"/v1/models/{model['id']}/predict", json={"instances": rows, "mc_samples": 5})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["mc_samples"]


def test_self_normalizing_preset_refuses_gaussian_layers(client: TestClient) -> None:
    layers = [
        {"type": "dense", "units": 16},
        {"type": "gaussian_noise", "stddev": 0.1},
        {"type": "gaussian_dropout", "rate": 0.1},
        OUT,
    ]
    spec = make_spec(model={"preset": "self_normalizing", "layers": layers})
    r = client.post("/v1/jobs/validate", json=spec)
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["error"]["details"]]
    assert ["model", "layers", 1] in locs and ["model", "layers", 2] in locs
