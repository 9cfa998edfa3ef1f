"""Each spec kind builds exactly the Keras model written by hand, and the planner counts alike."""

from typing import Any

import keras
import numpy as np
import pytest

from inference.summary import model_summary
from service.spec import TrainingSpec
from service.spec.plan import DatasetMeta, plan_model
from worker.build.model import build_model, compile_model

DIGITS = DatasetMeta(1797, (64,), "classification", 10)
FASHION = DatasetMeta(60000, (28, 28), "classification", 10)


def built(
    layers: list[dict[str, Any]], meta: DatasetMeta = DIGITS, **spec: Any
) -> tuple[keras.Model, Any, TrainingSpec]:
    body = {
        "dataset": {"builtin": "digits"},
        "model": {"normalize_inputs": False, "layers": layers},
        **spec,
    }
    if "defaults" in spec:
        body["model"]["defaults"] = body.pop("defaults")
    s = TrainingSpec.model_validate(body)
    plan = plan_model(s, meta)
    return build_model(plan, meta.input_shape, None), plan, s


def config(layer: keras.layers.Layer) -> dict[str, Any]:
    cfg = layer.get_config()
    cfg.pop("name", None)
    for key in ("kernel_initializer", "bias_initializer"):
        if isinstance(cfg.get(key), dict):
            cfg[key]["config"].pop("seed", None)
    return cfg


OUT = {"type": "dense", "units": 10, "activation": "softmax"}

HAND_WRITTEN: list[tuple[str, dict[str, Any], keras.layers.Layer]] = [
    (
        "dense he elu",
        {"type": "dense", "units": 50, "activation": "elu", "kernel_initializer": "he_normal"},
        keras.layers.Dense(50, activation="elu", kernel_initializer="he_normal"),
    ),
    *[
        (
            f"dense {act} {init}",
            {"type": "dense", "units": 16, "activation": act, "kernel_initializer": init},
            keras.layers.Dense(16, activation=act, kernel_initializer=init),
        )
        for act, init in [
            ("relu", "he_uniform"),
            ("selu", "lecun_normal"),
            ("tanh", "glorot_normal"),
            ("gelu", "lecun_uniform"),
            ("swish", "he_normal"),
            ("leaky_relu", "he_normal"),
            ("softplus", "glorot_uniform"),
        ]
    ],
    (
        "dense logistic",
        {"type": "dense", "units": 20, "activation": "logistic"},
        keras.layers.Dense(20, activation="sigmoid"),
    ),
    (
        "dense variance scaling",
        {
            "type": "dense",
            "units": 20,
            "activation": "relu",
            "kernel_initializer": {
                "type": "variance_scaling",
                "scale": 2.0,
                "mode": "fan_avg",
                "distribution": "uniform",
            },
        },
        keras.layers.Dense(
            20,
            activation="relu",
            kernel_initializer=keras.initializers.VarianceScaling(
                scale=2.0, mode="fan_avg", distribution="uniform"
            ),
        ),
    ),
    (
        "dense l1 l2 max-norm",
        {
            "type": "dense",
            "units": 20,
            "kernel_regularizer": {"l1": 0.01, "l2": 0.02},
            "kernel_constraint": {"max_norm": 1.5},
        },
        keras.layers.Dense(
            20,
            kernel_regularizer=keras.regularizers.L1L2(l1=0.01, l2=0.02),
            kernel_constraint=keras.constraints.MaxNorm(1.5, axis=0),
        ),
    ),
    (
        "dense l2 only",
        {"type": "dense", "units": 20, "kernel_regularizer": {"l2": 0.01}},
        keras.layers.Dense(20, kernel_regularizer=keras.regularizers.L2(0.01)),
    ),
    (
        "dense no bias",
        {"type": "dense", "units": 20, "use_bias": False},
        keras.layers.Dense(20, use_bias=False),
    ),
    (
        "batch norm",
        {"type": "batch_normalization", "momentum": 0.9},
        keras.layers.BatchNormalization(momentum=0.9),
    ),
    ("dropout", {"type": "dropout", "rate": 0.3}, keras.layers.Dropout(0.3)),
    ("alpha dropout", {"type": "alpha_dropout", "rate": 0.1}, keras.layers.AlphaDropout(0.1)),
    ("activation", {"type": "activation", "activation": "selu"}, keras.layers.Activation("selu")),
    (
        "leaky relu",
        {"type": "leaky_relu", "negative_slope": 0.2},
        keras.layers.LeakyReLU(negative_slope=0.2),
    ),
    ("prelu", {"type": "prelu"}, keras.layers.PReLU()),
    (
        "gaussian noise",
        {"type": "gaussian_noise", "stddev": 0.1},
        keras.layers.GaussianNoise(0.1),
    ),
    (
        "gaussian dropout",
        {"type": "gaussian_dropout", "rate": 0.2},
        keras.layers.GaussianDropout(0.2),
    ),
]


@pytest.mark.parametrize(
    ("case", "layer_spec", "hand"), HAND_WRITTEN, ids=[c[0] for c in HAND_WRITTEN]
)
def test_layer_matches_hand_written(
    case: str, layer_spec: dict[str, Any], hand: keras.layers.Layer
) -> None:
    model, plan, _ = built([layer_spec, OUT])
    ours = model.layers[0]
    assert type(ours) is type(hand)
    assert config(ours) == config(hand)
    hand_model = keras.Sequential([keras.Input((64,)), hand, keras.layers.Dense(10)])
    assert ours.count_params() == hand_model.layers[0].count_params()
    assert plan.summary()["total_params"] == model.count_params()


def test_defaults_apply_to_every_dense_unless_overridden() -> None:
    model, _, _ = built(
        [
            {"type": "dense", "units": 30},
            {"type": "dense", "units": 20, "activation": "tanh"},
            {
                "type": "dense",
                "units": 10,
                "activation": "softmax",
                "kernel_initializer": "glorot_uniform",
            },
        ],
        defaults={
            "activation": "elu",
            "kernel_initializer": "he_normal",
            "kernel_regularizer": {"l2": 0.01},
        },
    )
    first, second, last = model.layers
    assert first.get_config()["activation"] == "elu"
    assert second.get_config()["activation"] == "tanh"
    assert first.get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    assert last.get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert all(
        isinstance(layer.kernel_regularizer, keras.regularizers.L2) for layer in model.layers
    )


def test_fashion_batch_norm_mlp_has_the_books_parameter_counts() -> None:
    layers = [
        {"type": "flatten"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 300, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
    model, plan, _ = built(layers, FASHION)
    hand = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(300, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(100, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    ours = model_summary(model)
    assert ours["total_params"] == hand.count_params() == 271_346
    assert ours["trainable_params"] == 268_978
    assert ours["non_trainable_params"] == 2_368
    assert [config(a) for a in model.layers] == [config(b) for b in hand.layers]
    planned = plan.summary()
    for key in ("total_params", "trainable_params", "non_trainable_params"):
        assert planned[key] == ours[key]
    assert [
        (p["name"], p["class_name"], p["output_shape"], p["params"]) for p in planned["layers"]
    ] == [(p["name"], p["class_name"], p["output_shape"], p["params"]) for p in ours["layers"]]


def test_normalization_is_adapted_and_counted() -> None:
    X = np.random.default_rng(0).normal(3.0, 2.0, size=(200, 4, 5)).astype("float32")
    X[:, 0, 0] = 1.0  # a constant feature must not blow up unseen values
    s = TrainingSpec.model_validate(
        {
            "dataset": {"builtin": "digits"},
            "model": {
                "layers": [
                    {"type": "flatten"},
                    {"type": "dense", "units": 3, "activation": "softmax"},
                ]
            },
        }
    )
    meta = DatasetMeta(200, (4, 5), "classification", 3)
    plan = plan_model(s, meta)
    model = build_model(plan, meta.input_shape, X)
    assert model.count_params() == plan.summary()["total_params"]
    assert model_summary(model)["non_trainable_params"] == 2 * 20 + 1
    norm = model.layers[0](X)
    out = keras.ops.convert_to_numpy(norm)
    assert np.allclose(out[:, 1:, 1:].mean(axis=0), 0, atol=1e-4)
    unseen = X[:1].copy()
    unseen[0, 0, 0] = 5.0
    assert abs(float(keras.ops.convert_to_numpy(model.layers[0](unseen))[0, 0, 0])) <= 4.0


OPTIMIZERS = [
    (
        {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True, "clipnorm": 1.0},
        keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, nesterov=True, clipnorm=1.0),
    ),
    ({"type": "adagrad", "learning_rate": 0.01}, keras.optimizers.Adagrad(learning_rate=0.01)),
    (
        {"type": "rmsprop", "rho": 0.8, "clipvalue": 0.5},
        keras.optimizers.RMSprop(learning_rate=0.001, rho=0.8, clipvalue=0.5),
    ),
    ({"type": "adam", "beta_1": 0.8}, keras.optimizers.Adam(beta_1=0.8)),
    ({"type": "nadam", "global_clipnorm": 2.0}, keras.optimizers.Nadam(global_clipnorm=2.0)),
    ({"type": "adamax", "beta_2": 0.99}, keras.optimizers.Adamax(beta_2=0.99)),
    ({"type": "adamw", "weight_decay": 0.01}, keras.optimizers.AdamW(weight_decay=0.01)),
]


@pytest.mark.parametrize(("opt_spec", "hand"), OPTIMIZERS, ids=[o[0]["type"] for o in OPTIMIZERS])
def test_optimizer_matches_hand_written(
    opt_spec: dict[str, Any], hand: keras.optimizers.Optimizer
) -> None:
    model, plan, s = built([OUT], optimizer=opt_spec)
    compile_model(model, s, plan, 100)
    ours = model.optimizer.get_config()
    theirs = hand.get_config()
    ours.pop("name")
    theirs.pop("name")
    assert ours == theirs


def test_one_cycle_sgd_equals_keras_sgd_when_momentum_does_not_cycle() -> None:
    from inference.custom_objects import OneCycleSGD

    def trained(optimizer: keras.optimizers.Optimizer) -> list[np.ndarray]:
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer=optimizer, loss="mse")
        x = np.random.default_rng(0).random((64, 4)).astype("float32")
        model.fit(x, x[:, :3], epochs=2, batch_size=16, verbose=0, shuffle=False)
        return model.get_weights()

    ours = trained(
        OneCycleSGD(total_steps=8, min_momentum=0.9, learning_rate=0.1, momentum=0.9, nesterov=True)
    )
    theirs = trained(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True))
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(a, b, atol=1e-6)
    restored = OneCycleSGD.from_config(OneCycleSGD(total_steps=8, momentum=0.9).get_config())
    assert restored.total_steps == 8 and restored.min_momentum == 0.85
