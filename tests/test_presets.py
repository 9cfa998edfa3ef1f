"""The default and self_normalizing presets, and the randomized leaky ReLU layer."""

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from inference.custom_objects import RReLU
from service.errors import SpecInvalid
from service.spec import TrainingSpec
from service.spec.plan import DatasetMeta, plan_model
from tests.conftest import make_spec
from worker.build.model import build_model

DIGITS = DatasetMeta(1797, (64,), "classification", 10)


def plan_of(model: dict[str, Any], **extra: Any) -> Any:
    return plan_model(TrainingSpec.model_validate(make_spec(model=model, **extra)), DIGITS)


def hidden(n: int, **layer: Any) -> list[dict[str, Any]]:
    return [{"type": "dense", "units": 16, **layer} for _ in range(n)] + [
        {"type": "dense", "units": 10, "activation": "softmax"}
    ]


def test_default_preset_fills_he_elu_bn_and_early_stopping() -> None:
    plan = plan_of({"preset": "default", "layers": hidden(5)})
    types = [layer.type for layer in plan.layers]
    assert types == ["normalization"] + ["dense", "batch_normalization"] * 5 + ["dense"]
    first = plan.layers[1].config
    assert first["activation"] == "elu" and first["kernel_initializer"] == "he_normal"
    assert plan.layers[-1].config["activation"] == "softmax"
    assert plan.spec.early_stopping is not None and plan.spec.early_stopping.patience == 10
    model = build_model(plan, (64,), np.random.rand(20, 64).astype("float32"))
    hand = keras.layers.Dense(16, activation="elu", kernel_initializer="he_normal")
    assert model.layers[1].get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    assert model.layers[1].get_config()["activation"] == hand.get_config()["activation"]


def test_default_preset_keeps_what_the_spec_says() -> None:
    plan = plan_of(
        {"preset": "default", "defaults": {"activation": "relu"}, "layers": hidden(2)},
        early_stopping={"patience": 3},
    )
    assert "batch_normalization" not in [layer.type for layer in plan.layers]  # shallow
    assert plan.layers[1].config["activation"] == "relu"
    assert plan.spec.early_stopping.patience == 3


def test_self_normalizing_preset_fills_lecun_selu() -> None:
    layers = hidden(3)
    layers.insert(3, {"type": "alpha_dropout", "rate": 0.1})
    plan = plan_of({"preset": "self_normalizing", "layers": layers})
    dense = [layer.config for layer in plan.layers if layer.type == "dense"]
    assert all(
        c["activation"] == "selu" and c["kernel_initializer"] == "lecun_normal" for c in dense[:-1]
    )
    assert plan.layers[0].type == "normalization"


@pytest.mark.parametrize(
    ("model", "loc"),
    [
        ({"layers": [{"type": "batch_normalization"}, *hidden(1)]}, ["model", "layers", 0]),
        ({"layers": [{"type": "dropout", "rate": 0.2}, *hidden(1)]}, ["model", "layers", 0]),
        ({"layers": hidden(1, activation="relu")}, ["model", "layers", 0, "activation"]),
        (
            {"layers": hidden(1, kernel_regularizer={"l2": 0.1})},
            ["model", "layers", 0, "kernel_regularizer"],
        ),
        (
            {"layers": hidden(1, kernel_initializer="he_normal")},
            ["model", "layers", 0, "kernel_initializer"],
        ),
        (
            {"defaults": {"kernel_regularizer": {"l1": 0.1}}, "layers": hidden(1)},
            ["model", "defaults", "kernel_regularizer"],
        ),
        (
            {"defaults": {"activation": "tanh"}, "layers": hidden(1)},
            ["model", "defaults", "activation"],
        ),
        ({"normalize_inputs": False, "layers": hidden(1)}, ["model", "normalize_inputs"]),
        ({"layers": [{"type": "prelu"}, *hidden(1)]}, ["model", "layers", 0]),
    ],
)
def test_self_normalizing_refuses_what_breaks_it(
    client: TestClient, model: dict[str, Any], loc: list[Any]
) -> None:
    r = client.post(
        "/v1/jobs/validate", json=make_spec(model={"preset": "self_normalizing", **model})
    )
    assert r.status_code == 422
    detail = r.json()["error"]["details"][0]
    assert detail["loc"] == loc and "self-normalisation" in detail["msg"]


def test_default_preset_refuses_alpha_dropout() -> None:
    with pytest.raises(SpecInvalid) as err:
        plan_of(
            {"preset": "default", "layers": [{"type": "alpha_dropout", "rate": 0.1}, *hidden(1)]}
        )
    assert err.value.details[0].loc == ("model", "layers", 0)


def test_batch_norm_between_dense_and_activation() -> None:
    plan = plan_of(
        {
            "normalize_inputs": False,
            "layers": [
                {"type": "dense", "units": 20, "use_bias": False},
                {"type": "batch_normalization"},
                {"type": "activation", "activation": "elu"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        }
    )
    model = build_model(plan, (64,), None)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense",
        "BatchNormalization",
        "Activation",
        "Dense",
    ]
    assert model.layers[0].get_config()["activation"] == "linear"
    assert model.count_params() == plan.summary()["total_params"] == 64 * 20 + 80 + 210


def test_rrelu_draws_slopes_when_training_and_uses_the_mean_otherwise(tmp_path: Path) -> None:
    layer = RReLU(lower=0.1, upper=0.3, seed=1)
    x = -np.ones((200, 50), dtype="float32")
    train = keras.ops.convert_to_numpy(layer(x, training=True))
    slopes = -train
    assert 0.1 <= slopes.min() and slopes.max() <= 0.3 and slopes.std() > 0.03
    infer = keras.ops.convert_to_numpy(layer(x, training=False))
    assert np.allclose(infer, -0.2)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(-x)), -x)  # positives pass
    plan = plan_of(
        {
            "normalize_inputs": False,
            "layers": [
                {"type": "dense", "units": 8},
                {"type": "rrelu", "lower": 0.1, "upper": 0.3},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        }
    )
    model = build_model(plan, (64,), None)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[1], RReLU)
    assert loaded.layers[1].get_config()["lower"] == 0.1
    X = np.random.rand(4, 64).astype("float32")
    assert np.allclose(loaded.predict_on_batch(X), model.predict_on_batch(X), atol=1e-6)


def test_rrelu_bounds_are_checked(client: TestClient) -> None:
    body = make_spec(
        model={
            "layers": [
                {"type": "rrelu", "lower": 0.5, "upper": 0.1},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        }
    )
    r = client.post("/v1/jobs/validate", json=body)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["model", "layers", 0]
