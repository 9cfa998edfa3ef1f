"""Gradient health: a deep sigmoid net is flagged vanishing, He/ELU/batch norm is not."""

from typing import Any

import keras
import numpy as np
from fastapi.testclient import TestClient

from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job
from worker.training.diagnostics import flags, measure


def deep(activation: str, init: str | None, batch_norm: bool, depth: int = 20) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    for _ in range(depth):
        dense: dict[str, Any] = {"type": "dense", "units": 32, "activation": activation}
        if init:
            dense["kernel_initializer"] = init
        layers.append(dense)
        if batch_norm:
            layers.append({"type": "batch_normalization"})
    layers.append({"type": "dense", "units": 10, "activation": "softmax"})
    return {"layers": layers}


def test_deep_sigmoid_net_is_flagged_vanishing(client: TestClient, ctx: WorkerContext) -> None:
    sigmoid = submit(client, make_spec(epochs=2, model=deep("sigmoid", None, False)))
    healthy = submit(client, make_spec(epochs=2, model=deep("elu", "he_normal", True)))
    assert run_job(ctx, sigmoid) == "succeeded"
    assert run_job(ctx, healthy) == "succeeded"

    bad = client.get(f"/v1/jobs/{sigmoid}/diagnostics").json()
    assert [e["epoch"] for e in bad["epochs"]] == [1, 2]
    assert [f["code"] for f in bad["flags"]] == ["vanishing_gradients"]
    assert "initialisation" in bad["flags"][0]["message"]
    dense = [r for r in bad["epochs"][-1]["layers"] if r["class_name"] == "Dense"]
    assert dense[0]["gradient_norm"] < 1e-3 * dense[-1]["gradient_norm"]
    assert all(r["saturated_fraction"] is not None for r in dense[:-1])
    job = client.get(f"/v1/jobs/{sigmoid}").json()
    assert job["warnings"][0]["code"] == "vanishing_gradients"

    good = client.get(f"/v1/jobs/{healthy}/diagnostics").json()
    assert good["flags"] == [] and client.get(f"/v1/jobs/{healthy}").json()["warnings"] == []
    layer = good["epochs"][0]["layers"][1]
    assert set(layer) >= {
        "name",
        "gradient_norm",
        "weight_norm",
        "activation_mean",
        "activation_std",
        "saturated_fraction",
        "dead_fraction",
    }
    assert layer["weight_norm"] > 0 and layer["activation_std"] > 0


def test_dead_and_saturated_units_are_measured() -> None:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                6,
                activation="relu",
                kernel_initializer="ones",
                bias_initializer=keras.initializers.Constant(-100.0),
            ),
            keras.layers.Dense(
                5,
                activation="tanh",
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant(10.0),
            ),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    probe = keras.Model(model.inputs[0], [layer.output for layer in model.layers])
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = np.zeros(32, dtype="int64")
    records = measure(
        model,
        probe,
        x,
        y,
        lambda t, p: keras.ops.mean(keras.losses.sparse_categorical_crossentropy(t, p)),
    )
    assert records[0]["dead_fraction"] == 1.0  # every ReLU unit is zero for every row
    assert records[1]["saturated_fraction"] == 1.0  # tanh(10) is at its asymptote
    assert records[2]["saturated_fraction"] is None and records[2]["dead_fraction"] is None
    assert records[0]["gradient_norm"] == 0.0


def test_flags_from_norms() -> None:
    def rec(norm: float) -> dict[str, Any]:
        return {"class_name": "Dense", "gradient_norm": norm, "gradient_finite": True}

    assert flags([rec(1e-6), rec(1.0)], 3)[0]["code"] == "vanishing_gradients"
    assert flags([rec(1e4), rec(1.0)], 3)[0]["code"] == "exploding_gradients"
    assert flags([rec(0.5), rec(1.0)], 3) == []
    nan = {"class_name": "Dense", "gradient_norm": None, "gradient_finite": False}
    assert flags([nan, rec(1.0)], 1)[0]["code"] == "exploding_gradients"
