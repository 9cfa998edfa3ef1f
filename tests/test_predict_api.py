"""The predict route: plain, MC options (samples, interval, seed), bounds and shapes."""

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.datasets.arrays import load_builtin
from service.settings import Settings
from tests.conftest import make_spec, submit
from tests.test_training import upload_regression
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def trained(client: TestClient, ctx: WorkerContext, **spec: Any) -> str:
    job_id = submit(client, make_spec(epochs=2, **spec))
    assert run_job(ctx, job_id) == "succeeded"
    return str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


def test_mc_options_for_classifiers(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(client, ctx)
    X = load_builtin("digits").X[:4].tolist()
    url = f"/v1/models/{model_id}/predict"
    r = client.post(url, json={"instances": X, "mc_samples": 20, "seed": 1, "return_samples": True})
    assert r.status_code == 200, r.text
    first = r.json()["predictions"][0]
    samples = np.asarray(first["samples"])
    assert samples.shape == (20, 10)
    assert np.allclose(samples.mean(axis=0), first["mean"]) and np.allclose(
        samples.std(axis=0), first["std"]
    )
    a = client.post(url, json={"instances": X, "mc_samples": 20, "seed": 1}).json()
    b = client.post(url, json={"instances": X, "mc_samples": 20, "seed": 2}).json()
    assert a["predictions"][0]["mean"] == first["mean"] and a != b
    # batch composition does not change a row's answer (batch norm in inference mode)
    alone = client.post(url, json={"instances": X[:1], "mc_samples": 400, "seed": 3}).json()
    crowd = client.post(url, json={"instances": X, "mc_samples": 400, "seed": 3}).json()
    assert (
        np.abs(np.subtract(alone["predictions"][0]["mean"], crowd["predictions"][0]["mean"])).max()
        < 0.05
    )
    assert (
        client.post(url, json={"instances": X, "mc_samples": 5, "interval": 0.9}).status_code == 422
    )
    assert client.post(url, json={"instances": X, "return_samples": True}).status_code == 422


def test_interval_for_regression(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(
        client,
        ctx,
        dataset={"id": upload_regression(client)},
        model={
            "layers": [
                {"type": "dense", "units": 16, "activation": "relu"},
                {"type": "dropout", "rate": 0.3},
                {"type": "dense", "units": 1},
            ]
        },
    )
    r = client.post(
        f"/v1/models/{model_id}/predict",
        json={"instances": [[0.1, 0.2, 0.3]], "mc_samples": 200, "interval": 0.8},
    )
    assert r.status_code == 200, r.text
    pred = r.json()["predictions"][0]
    lo, hi = pred["interval"]["lower"][0], pred["interval"]["upper"][0]
    assert pred["interval"]["level"] == 0.8 and lo < pred["mean"][0] < hi


BAD_REQUESTS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"instances": [[0] * 64], "mc_samples": 10_001}, ["mc_samples"]),
    ({"instances": [[0] * 64], "mc_samples": -1}, ["mc_samples"]),
    ({"instances": []}, ["instances"]),
    ({"instances": [[0] * 63]}, ["instances"]),
    ({"instances": [[0] * 64, [0] * 63]}, ["instances"]),
    ({"instances": [["a"] * 64]}, ["instances"]),
    ({"instances": [[0] * 64], "extra": 1}, ["extra"]),
    ({"instances": [[0] * 64], "interval": 1.5}, ["interval"]),
]


def test_bad_predict_requests_are_422(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(client, ctx)
    for body, loc in BAD_REQUESTS:
        r = client.post(f"/v1/models/{model_id}/predict", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["details"][0]["loc"] == loc


def test_infinite_inputs_are_422(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(client, ctx)
    raw = '{"instances": [[' + ", ".join(["1e309"] * 64) + "]]}"
    r = client.post(
        f"/v1/models/{model_id}/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "1e309" not in r.text


def test_instances_times_samples_bound(settings: Settings, ctx: WorkerContext) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_mc_values": 1000}))) as c:
        model_id = trained(c, ctx)
        ok = c.post(
            f"/v1/models/{model_id}/predict", json={"instances": [[0] * 64] * 2, "mc_samples": 50}
        )
        assert ok.status_code == 200
        too_many = c.post(
            f"/v1/models/{model_id}/predict", json={"instances": [[0] * 64] * 3, "mc_samples": 50}
        )
        assert too_many.status_code == 422


def test_model_cache_is_lru_within_its_budget() -> None:
    from collections import OrderedDict
    from types import SimpleNamespace

    from service.models.predictions import evict

    cache = OrderedDict((name, SimpleNamespace(memory_bytes=100)) for name in "abcd")
    cache.move_to_end("a")  # most recently used
    evict(cache, max_models=10, max_bytes=250)
    assert list(cache) == ["d", "a"]
    evict(cache, max_models=1, max_bytes=10**9)
    assert list(cache) == ["a"]
    evict(cache, max_models=1, max_bytes=1)
    assert list(cache) == ["a"]  # the newest stays even past the budget
