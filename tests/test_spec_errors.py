"""Every way a spec is refused: 422 with the field's path, nothing queued, values not echoed."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_spec


def layers(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"layers": list(extra)}


DENSE10 = {"type": "dense", "units": 10, "activation": "softmax"}

CASES: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("unknown top-level field", make_spec(unknown_field=1), ["unknown_field"]),
    (
        "unknown layer field",
        make_spec(model=layers({"type": "dense", "units": 5, "colour": "red"}, DENSE10)),
        ["model", "layers", 0, "colour"],
    ),
    (
        "units below 1",
        make_spec(model=layers({"type": "dense", "units": 0}, DENSE10)),
        ["model", "layers", 0, "units"],
    ),
    (
        "units missing",
        make_spec(model=layers({"type": "dense"}, DENSE10)),
        ["model", "layers", 0, "units"],
    ),
    (
        "unknown layer type",
        make_spec(model=layers({"type": "conv9d"}, DENSE10)),
        ["model", "layers", 0],
    ),
    (
        "unknown activation",
        make_spec(model=layers({"type": "dense", "units": 5, "activation": "relu7"}, DENSE10)),
        ["model", "layers", 0, "activation"],
    ),
    (
        "unknown initializer",
        make_spec(model=layers({"type": "dense", "units": 5, "kernel_initializer": "he"}, DENSE10)),
        ["model", "layers", 0, "kernel_initializer"],
    ),
    (
        "bad variance scaling mode",
        make_spec(
            model=layers(
                {
                    "type": "dense",
                    "units": 5,
                    "kernel_initializer": {
                        "type": "variance_scaling",
                        "scale": 2.0,
                        "mode": "fan_max",
                    },
                },
                DENSE10,
            )
        ),
        ["model", "layers", 0, "kernel_initializer", "mode"],
    ),
    (
        "empty regularizer",
        make_spec(model=layers({"type": "dense", "units": 5, "kernel_regularizer": {}}, DENSE10)),
        ["model", "layers", 0, "kernel_regularizer"],
    ),
    (
        "negative l2",
        make_spec(
            model=layers({"type": "dense", "units": 5, "kernel_regularizer": {"l2": -1}}, DENSE10)
        ),
        ["model", "layers", 0, "kernel_regularizer", "l2"],
    ),
    (
        "max_norm zero",
        make_spec(
            model=layers(
                {"type": "dense", "units": 5, "kernel_constraint": {"max_norm": 0}}, DENSE10
            )
        ),
        ["model", "layers", 0, "kernel_constraint", "max_norm"],
    ),
    (
        "dropout rate 1",
        make_spec(model=layers({"type": "dropout", "rate": 1.0}, DENSE10)),
        ["model", "layers", 0, "rate"],
    ),
    ("no layers", make_spec(model={"layers": []}), ["model", "layers"]),
    ("model missing", {"dataset": {"builtin": "digits"}}, ["model"]),
    ("unknown builtin", make_spec(dataset={"builtin": "mnist"}), ["dataset", "builtin"]),
    ("unknown dataset id", make_spec(dataset={"id": "nope"}), ["dataset", "id"]),
    ("unknown optimizer", make_spec(optimizer={"type": "adadelta9"}), ["optimizer"]),
    (
        "negative learning rate",
        make_spec(optimizer={"type": "sgd", "learning_rate": -1}),
        ["optimizer", "learning_rate"],
    ),
    (
        "two clippings",
        make_spec(optimizer={"type": "adam", "clipnorm": 1, "clipvalue": 1}),
        ["optimizer"],
    ),
    ("sgd with rho", make_spec(optimizer={"type": "sgd", "rho": 0.9}), ["optimizer", "rho"]),
    (
        "piecewise lengths",
        make_spec(lr_schedule={"type": "piecewise", "boundaries": [10], "values": [0.1]}),
        ["lr_schedule"],
    ),
    ("epochs zero", make_spec(epochs=0), ["epochs"]),
    ("epochs too many", make_spec(epochs=10**6), ["epochs"]),
    ("batch size zero", make_spec(batch_size=0), ["batch_size"]),
    ("validation split 1", make_spec(validation_split=1.0), ["validation_split"]),
    ("unknown loss", make_spec(loss="hinge9"), ["loss"]),
    ("regression loss on classes", make_spec(loss="mse"), ["loss"]),
    ("unknown metric", make_spec(metrics=["accuracy", "f7"]), ["metrics", 1]),
    (
        "wrong output units",
        make_spec(model=layers({"type": "dense", "units": 3, "activation": "softmax"})),
        ["model", "layers", 0, "units"],
    ),
    (
        "output not softmax for cce",
        make_spec(
            loss="sparse_categorical_crossentropy",
            model=layers({"type": "dense", "units": 10, "activation": "relu"}),
        ),
        ["model", "layers", 0],
    ),
    (
        "binary loss on 10 classes",
        make_spec(
            loss="binary_crossentropy",
            model=layers({"type": "dense", "units": 1, "activation": "sigmoid"}),
        ),
        ["model", "layers", 0, "units"],
    ),
    (
        "early stopping on unknown metric",
        make_spec(early_stopping={"monitor": "val_auc"}),
        ["early_stopping", "monitor"],
    ),
    (
        "early stopping unknown field",
        make_spec(early_stopping={"patience": 2, "wait": 1}),
        ["early_stopping", "wait"],
    ),
    (
        "clone false",
        make_spec(base_model={"model_id": "m", "clone": False}),
        ["base_model", "clone"],
    ),
    (
        "duplicate layer names",
        make_spec(
            model=layers(
                {"type": "dense", "units": 5, "name": "a"},
                {"type": "dense", "units": 10, "activation": "softmax", "name": "a"},
            )
        ),
        ["model", "layers", 1, "name"],
    ),
    (
        "units over the limit",
        make_spec(model=layers({"type": "dense", "units": 10**6}, DENSE10)),
        ["model", "layers", 0, "units"],
    ),
    ("seed negative", make_spec(seed=-1), ["seed"]),
    (
        "defaults unknown field",
        make_spec(model={"defaults": {"activatio": "elu"}, "layers": [DENSE10]}),
        ["model", "defaults", "activatio"],
    ),
]


@pytest.mark.parametrize(("case", "body", "loc"), CASES, ids=[c[0] for c in CASES])
def test_bad_spec_is_422_with_loc(
    client: TestClient, case: str, body: dict[str, Any], loc: list[Any]
) -> None:
    for path in ("/v1/jobs/validate", "/v1/jobs"):
        r = client.post(path, json=body)
        assert r.status_code == 422, (case, r.text)
        err = r.json()["error"]
        assert err["code"] == "validation_error"
        assert loc in [d["loc"] for d in err["details"]], (case, err)
    assert client.get("/v1/jobs").json()["items"] == []  # nothing queued


def test_2d_input_without_flatten_is_refused(client: TestClient, tmp_path: Any) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, X=np.random.rand(50, 4, 4).astype("float32"), y=np.arange(50) % 3)
    ds = client.post("/v1/datasets", files={"file": ("img.npz", buf.getvalue())}).json()
    body = make_spec(
        dataset={"id": ds["id"]},
        model={"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
    )
    r = client.post("/v1/jobs/validate", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["model", "layers"]
    assert "flatten" in r.json()["error"]["message"]
    body["model"]["layers"].insert(0, {"type": "flatten"})
    assert client.post("/v1/jobs/validate", json=body).status_code == 200


@pytest.mark.parametrize("raw", [b'{"epochs": 1e309, "model": {}}', b'{"epochs": -1e309}'])
def test_huge_numbers_are_4xx_and_not_echoed(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert "1e309" not in r.text and "inf" not in r.text.lower().replace("info", "")


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"', b"", b"{"])
def test_non_object_bodies_are_400_or_422(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert "error" in r.json()


def test_error_body_does_not_echo_values(client: TestClient) -> None:
    secret = "s3cr3t-value-" + "x" * 20
    r = client.post("/v1/jobs", json=make_spec(loss=secret, name=secret * 20))
    assert r.status_code == 422
    assert secret not in r.text


def test_validate_answers_the_summary(client: TestClient) -> None:
    r = client.post("/v1/jobs/validate", json=make_spec())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["loss"] == "sparse_categorical_crossentropy"
    assert body["metrics"] == ["accuracy"]
    names = [layer["class_name"] for layer in body["summary"]["layers"]]
    assert names == ["Normalization", "Dense", "BatchNormalization", "Dropout", "Dense"]
    # 64 inputs: normalization 2*64+1, dense 64*32+32, BN 4*32, dense 32*10+10
    assert body["summary"]["total_params"] == 129 + 2080 + 128 + 330
    assert body["summary"]["non_trainable_params"] == 129 + 64


def test_multi_device_jobs_need_a_row_per_device(client: TestClient) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()  # 20 rows: 0.1 leaves 2 validation rows, too few for 4 devices
    np.savez(buf, X=np.random.rand(20, 4).astype("float32"), y=np.arange(20) % 2)
    ds = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()["id"]
    model = {"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]}

    def refused(validation_split: float, devices: int) -> dict[str, Any]:
        body = make_spec(
            dataset={"id": ds}, model=model, validation_split=validation_split,
            batch_size=32, resources={"devices": devices},
        )  # fmt: skip
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 422, r.text
        return dict(r.json()["error"]["details"][0])

    few_val = refused(0.1, 4)
    assert few_val["loc"] == ["validation_split"]
    assert "at least 4 validation rows" in few_val["msg"] and "= 2" in few_val["msg"]
    few_train = refused(0.5, 16)
    assert few_train["loc"] == ["resources", "devices"] and "10 training rows" in few_train["msg"]
    ok = make_spec(dataset={"id": ds}, model=model, validation_split=0.2, resources={"devices": 4})
    assert client.post("/v1/jobs/validate", json=ok).status_code == 200
