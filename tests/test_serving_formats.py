"""TensorFlow Serving's REST predict API and the Open Inference Protocol v2, sent the bodies
those protocols document, answered as /v1 predict answers the same rows."""

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.datasets.arrays import load_builtin
from service.serving.service import MC_SAMPLES
from service.settings import Settings
from tests.test_predict_api import trained
from tests.test_training import upload_regression
from worker.context import WorkerContext

X = load_builtin("digits").X[:4].tolist()
NO_DROPOUT = {
    "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
}


def v1(client: TestClient, model: str, rows: list[Any], **options: Any) -> list[Any]:
    r = client.post(f"/v1/models/{model}/predict", json={"instances": rows, **options})
    assert r.status_code == 200, r.text
    return list(r.json()["predictions"])


def post(client: TestClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def loc_of(client: TestClient, url: str, body: dict[str, Any]) -> list[Any]:
    r = client.post(url, json=body)
    assert r.status_code == 422, (body, r.text)
    return list(r.json()["error"]["details"][0]["loc"])


def tensor(data: Any, shape: list[int], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": "input", "shape": shape, "datatype": datatype, "data": data}


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {out["name"]: out for out in answer["outputs"]}


def test_health_needs_no_key_and_the_rest_does(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"require_auth": True}))) as c:
        assert c.get("/v2/health/live").json() == {"live": True}
        ready = c.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        for method, url in [
            ("GET", "/v2/models/m"),
            ("GET", "/v2/models/m/ready"),
            ("GET", "/v2/models/m/versions/1"),
            ("POST", "/v2/models/m/infer"),
            ("POST", "/v1/models/m:predict"),
        ]:
            assert c.request(method, url, json={}).status_code == 401, url


def test_tfserving_row_and_columnar_formats(client: TestClient, ctx: WorkerContext) -> None:
    from inference.exports import MC_SAMPLES as EXPORT_SAMPLES

    assert MC_SAMPLES == EXPORT_SAMPLES
    model_id = trained(client, ctx)
    url = f"/v1/models/{model_id}:predict"
    plain = np.asarray(v1(client, model_id, X))
    for body, key in [
        ({"instances": X}, "predictions"),
        (
            {"signature_name": "serving_default", "instances": [{"input": r} for r in X]},
            "predictions",
        ),
        ({"instances": [{"x": r} for r in X]}, "predictions"),  # the SavedModel's input name
        ({"inputs": X}, "outputs"),
        ({"signature_name": "serving_default", "inputs": {"input": X}}, "outputs"),
    ]:
        answer = post(client, url, body)
        assert list(answer) == [key]
        assert np.allclose(answer[key], plain, atol=1e-6, rtol=0), body
    by_ref = post(client, "/v1/models/digits-mlp@latest:predict", {"instances": X[:1]})
    assert np.allclose(by_ref["predictions"], plain[:1], atol=1e-6, rtol=0)

    mc = v1(client, model_id, X, mc_samples=100, seed=5)
    assert all(p["class_name"] == str(p["class"]) for p in mc)  # digits: target names 0..9
    named = ("mean", "std", "class", "class_name")
    rows = post(client, url, {"signature_name": "mc_dropout", "instances": X, "seed": 5})
    assert rows["predictions"] == [{k: p[k] for k in named} for p in mc]
    columns = post(client, url, {"signature_name": "mc_dropout", "inputs": {"input": X}, "seed": 5})
    assert columns["outputs"] == {k: [p[k] for p in mc] for k in named}


def test_v2_metadata_ready_and_infer(client: TestClient, ctx: WorkerContext) -> None:
    first = trained(client, ctx)
    second = trained(client, ctx, seed=8)  # the same name: version 2
    meta = client.get("/v2/models/digits-mlp").json()
    assert meta["name"] == "digits-mlp" and meta["versions"] == ["1", "2"]
    assert meta["platform"] == "keras"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("predictions", "FP32", [-1, 10]),
        ("mean", "FP64", [-1, 10]),
        ("std", "FP64", [-1, 10]),
        ("class", "INT64", [-1]),
        ("class_name", "BYTES", [-1]),
        ("predictive_entropy", "FP64", [-1]),
        ("mutual_information", "FP64", [-1]),
    ]
    assert client.get("/v2/models/digits-mlp/versions/1").json() == meta
    assert client.get(f"/v2/models/{first}").json() == meta
    assert client.get("/v2/models/digits-mlp/ready").json() == {"name": "digits-mlp", "ready": True}
    assert client.get("/v2/models/digits-mlp/versions/2/ready").status_code == 200
    assert client.get("/v2/models/digits-mlp/versions/3/ready").status_code == 404
    assert client.get("/v2/models/digits-mlp/versions/3").status_code == 404
    assert client.get("/v2/models/unknown-name").status_code == 404

    flat = np.asarray(X).reshape(-1).tolist()
    answer = post(
        client,
        "/v2/models/digits-mlp/infer",
        {"id": "42", "inputs": [tensor(flat, [4, 64])]},
    )
    assert answer["model_name"] == "digits-mlp" and answer["model_version"] == "2"
    assert answer["id"] == "42" and answer["parameters"]["model_id"] == second
    (out,) = answer["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("predictions", [4, 10], "FP32")
    latest = np.asarray(v1(client, second, X))
    assert np.allclose(np.reshape(out["data"], (4, 10)), latest, atol=1e-6, rtol=0)
    nested = post(client, "/v2/models/digits-mlp/infer", {"inputs": [tensor(X, [4, 64], "INT64")]})
    assert "id" not in nested and nested["outputs"][0]["data"] == out["data"]

    older = np.asarray(v1(client, first, X))
    for url in ("/v2/models/digits-mlp/versions/1/infer", f"/v2/models/{first}/infer"):
        answer = post(client, url, {"inputs": [tensor(flat, [4, 64])]})
        assert answer["model_version"] == "1"
        assert np.allclose(np.reshape(answer["outputs"][0]["data"], (4, 10)), older, atol=1e-6)


def test_v2_monte_carlo_outputs(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(client, ctx)
    url = f"/v2/models/{model_id}/infer"
    mc = v1(client, model_id, X, mc_samples=30, seed=3)
    body = {"inputs": [tensor(X, [4, 64])], "parameters": {"mc_samples": 30, "seed": 3}}
    outputs = by_name(post(client, url, body))
    assert list(outputs) == [
        "predictions",
        "mean",
        "std",
        "class",
        "class_name",
        "predictive_entropy",
        "mutual_information",
    ]
    assert outputs["mean"]["shape"] == [4, 10] and outputs["mean"]["datatype"] == "FP64"
    assert outputs["mean"]["data"] == [v for p in mc for v in p["mean"]]
    assert outputs["std"]["data"] == [v for p in mc for v in p["std"]]
    assert outputs["class"] == {
        "name": "class",
        "shape": [4],
        "datatype": "INT64",
        "data": [p["class"] for p in mc],
    }
    assert outputs["class_name"]["datatype"] == "BYTES"
    assert outputs["class_name"]["data"] == [p["class_name"] for p in mc]
    for key in ("predictive_entropy", "mutual_information"):
        assert outputs[key]["data"] == [p[key] for p in mc]

    chosen = {
        "outputs": [{"name": "class_name"}, {"name": "mean", "parameters": {"binary_data": False}}]
    }
    answer = post(client, url, {**body, **chosen})
    assert [o["name"] for o in answer["outputs"]] == ["class_name", "mean"]
    assert answer["outputs"][1]["data"] == outputs["mean"]["data"]


def test_v2_regression_interval(client: TestClient, ctx: WorkerContext) -> None:
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
    meta = client.get(f"/v2/models/{model_id}").json()
    assert [o["name"] for o in meta["outputs"]] == ["predictions", "mean", "std", "lower", "upper"]
    rows = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]
    url = f"/v2/models/{model_id}/infer"
    params = {"mc_samples": 200, "seed": 4, "interval": 0.8}
    answer = post(client, url, {"inputs": [tensor(rows, [2, 3])], "parameters": params})
    outputs = by_name(answer)
    assert list(outputs) == ["predictions", "mean", "std", "lower", "upper"]
    mc = v1(client, model_id, rows, mc_samples=200, seed=4, interval=0.8)
    assert outputs["lower"]["data"] == [p["interval"]["lower"][0] for p in mc]
    assert outputs["upper"]["data"] == [p["interval"]["upper"][0] for p in mc]
    assert outputs["lower"]["shape"] == [2, 1]
    no_interval = {"inputs": [tensor(rows, [2, 3])], "parameters": {"mc_samples": 5}}
    assert loc_of(client, url, {**no_interval, "outputs": [{"name": "lower"}]}) == [
        "outputs",
        0,
        "name",
    ]


TFSERVING_REFUSALS: list[tuple[dict[str, Any], list[Any]]] = [
    ({"signature_name": "serving_default"}, ["instances"]),
    ({"instances": X, "inputs": X}, ["inputs"]),
    ({"signature_name": "predict", "instances": X}, ["signature_name"]),
    ({"signature_name": "mc_dropout", "instances": X}, ["signature_name"]),  # no dropout
    ({"instances": [{"image": X[0]}]}, ["instances", 0]),
    ({"instances": [{"input": X[0]}, X[1]]}, ["instances", 1]),
    ({"instances": [X[0][:63]]}, ["instances"]),
    ({"inputs": [X[0][:63]]}, ["inputs"]),
    ({"inputs": {"input": X, "other": X}}, ["inputs"]),
    ({"instances": X, "extra": 1}, ["extra"]),
]


def v2_refusals() -> list[tuple[dict[str, Any], list[Any]]]:
    ok = tensor(X[0], [1, 64])
    return [
        ({"inputs": [tensor(X[0][:63], [1, 64])]}, ["inputs", 0, "data"]),
        ({"inputs": [{**ok, "datatype": "UINT8"}]}, ["inputs", 0, "datatype"]),
        ({"inputs": [tensor(X[0], [1, 8, 8])]}, ["inputs", 0, "shape"]),
        ({"inputs": [tensor(X[0], [64])]}, ["inputs", 0, "shape"]),
        ({"inputs": [tensor([], [0, 64])]}, ["inputs", 0, "shape"]),
        ({"inputs": [{**ok, "name": "image"}]}, ["inputs", 0, "name"]),
        ({"inputs": [ok, ok]}, ["inputs"]),
        ({"inputs": [tensor([0.5] * 64, [1, 64], "INT32")]}, ["inputs", 0, "data"]),
        ({"inputs": [tensor(["a"] * 64, [1, 64])]}, ["inputs", 0, "data"]),
        ({"inputs": [ok], "parameters": {"mc_samples": 10}}, ["parameters", "mc_samples"]),
        ({"inputs": [ok], "parameters": {"interval": 0.9}}, ["parameters", "interval"]),
        (
            {"inputs": [ok], "parameters": {"binary_data_output": True}},
            ["parameters", "binary_data_output"],
        ),
        ({"inputs": [ok], "outputs": [{"name": "mean"}]}, ["outputs", 0, "name"]),
        ({"inputs": [ok], "outputs": [{"name": "logits"}]}, ["outputs", 0, "name"]),
        ({"inputs": [ok], "extra": 1}, ["extra"]),
        ({"inputs": []}, ["inputs"]),
    ]


def test_refusals_are_422_with_loc(client: TestClient, ctx: WorkerContext) -> None:
    model_id = trained(client, ctx, model=NO_DROPOUT)
    meta = client.get(f"/v2/models/{model_id}").json()
    assert [o["name"] for o in meta["outputs"]] == ["predictions"]
    for body, loc in TFSERVING_REFUSALS:
        assert loc_of(client, f"/v1/models/{model_id}:predict", body) == loc, body
    for body, loc in v2_refusals():
        assert loc_of(client, f"/v2/models/{model_id}/infer", body) == loc, body
    raw = '{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64", "data": [1e309'
    r = client.post(
        f"/v2/models/{model_id}/infer",
        content=raw + ", 0" * 63 + "]}]}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "1e309" not in r.text
    assert r.json()["error"]["details"][0]["loc"] == ["inputs", 0, "data"]
    assert client.post(f"/v2/models/{model_id}/infer", content=b"{").status_code == 400
    unknown = client.post("/v1/models/unknown:predict", json={"instances": X})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
