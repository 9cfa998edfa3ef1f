"""The registry from spec layer type to Keras builder: one entry per type in service/spec/layers.py.

Builders take the resolved config from service.spec.plan (defaults already applied) and the
layer name, and return the Keras layer a careful engineer would write by hand.
"""

from collections.abc import Callable
from typing import Any

import keras

from inference.custom_objects import RReLU


def initializer(value: str | dict[str, Any]) -> keras.initializers.Initializer:
    if isinstance(value, dict):
        return keras.initializers.VarianceScaling(
            scale=value["scale"], mode=value["mode"], distribution=value["distribution"]
        )
    return keras.initializers.get(value)


def regularizer(value: dict[str, Any] | None) -> keras.regularizers.Regularizer | None:
    if value is None:
        return None
    l1, l2 = value.get("l1"), value.get("l2")
    if l1 is not None and l2 is not None:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1 is not None:
        return keras.regularizers.L1(l1)
    return keras.regularizers.L2(l2)


def constraint(value: dict[str, Any] | None) -> keras.constraints.Constraint | None:
    if value is None:
        return None
    return keras.constraints.MaxNorm(max_value=value["max_norm"], axis=value["axis"])


def build_dense(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.Dense(
        cfg["units"],
        activation=cfg["activation"],
        use_bias=cfg["use_bias"],
        kernel_initializer=initializer(cfg["kernel_initializer"]),
        kernel_regularizer=regularizer(cfg["kernel_regularizer"]),
        kernel_constraint=constraint(cfg["kernel_constraint"]),
        name=name,
    )


def build_flatten(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.Flatten(name=name)


def build_batch_normalization(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(
        momentum=cfg["momentum"],
        epsilon=cfg["epsilon"],
        center=cfg["center"],
        scale=cfg["scale"],
        name=name,
    )


def build_dropout(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.Dropout(cfg["rate"], name=name)


def build_alpha_dropout(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.AlphaDropout(cfg["rate"], name=name)


def build_activation(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.Activation(cfg["activation"], name=name)


def build_leaky_relu(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=cfg["negative_slope"], name=name)


def build_prelu(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return keras.layers.PReLU(name=name)


def build_rrelu(cfg: dict[str, Any], name: str) -> keras.layers.Layer:
    return RReLU(lower=cfg["lower"], upper=cfg["upper"], name=name)


LAYER_BUILDERS: dict[str, Callable[[dict[str, Any], str], keras.layers.Layer]] = {
    "dense": build_dense,
    "flatten": build_flatten,
    "batch_normalization": build_batch_normalization,
    "dropout": build_dropout,
    "alpha_dropout": build_alpha_dropout,
    "activation": build_activation,
    "leaky_relu": build_leaky_relu,
    "prelu": build_prelu,
    "rrelu": build_rrelu,
}
