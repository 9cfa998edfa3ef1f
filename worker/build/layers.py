"""The registry from spec layer type to Keras builder: one builder per class registered in
service/spec/layers.py, under the same `type`.

A builder takes the resolved, typed spec layer (model.defaults already applied) and the layer
name, and returns the Keras layer a careful engineer would write by hand.
"""

from collections.abc import Callable
from typing import Any

import keras

from inference.custom_objects import RReLU
from service.registry import register_in
from service.spec import layers as spec
from service.spec.common import MaxNorm, Regularizer, VarianceScaling

Builder = Callable[[Any, str], keras.layers.Layer]
LAYER_BUILDERS: dict[str, Builder] = {}


def builds(type_name: str) -> Callable[[Builder], Builder]:
    """Register the builder of one spec layer type."""
    return register_in(LAYER_BUILDERS, type_name)


def initializer(value: str | VarianceScaling) -> keras.initializers.Initializer:
    if isinstance(value, VarianceScaling):
        return keras.initializers.VarianceScaling(
            scale=value.scale, mode=value.mode, distribution=value.distribution
        )
    return keras.initializers.get(value)


def regularizer(value: Regularizer | None) -> keras.regularizers.Regularizer | None:
    if value is None:
        return None
    if value.l1 is not None and value.l2 is not None:
        return keras.regularizers.L1L2(l1=value.l1, l2=value.l2)
    if value.l1 is not None:
        return keras.regularizers.L1(value.l1)
    return keras.regularizers.L2(value.l2)


def constraint(value: MaxNorm | None) -> keras.constraints.Constraint | None:
    if value is None:
        return None
    return keras.constraints.MaxNorm(max_value=value.max_norm, axis=value.axis)


@builds("dense")
def build_dense(layer: spec.Dense, name: str) -> keras.layers.Layer:
    assert layer.kernel_initializer is not None  # resolved by the plan
    return keras.layers.Dense(
        layer.units,
        activation=layer.activation,
        use_bias=layer.use_bias,
        kernel_initializer=initializer(layer.kernel_initializer),
        kernel_regularizer=regularizer(layer.kernel_regularizer),
        kernel_constraint=constraint(layer.kernel_constraint),
        name=name,
    )


@builds("flatten")
def build_flatten(layer: spec.Flatten, name: str) -> keras.layers.Layer:
    return keras.layers.Flatten(name=name)


@builds("batch_normalization")
def build_batch_normalization(layer: spec.BatchNormalization, name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        center=layer.center,
        scale=layer.scale,
        name=name,
    )


@builds("dropout")
def build_dropout(layer: spec.Dropout, name: str) -> keras.layers.Layer:
    return keras.layers.Dropout(layer.rate, name=name)


@builds("alpha_dropout")
def build_alpha_dropout(layer: spec.AlphaDropout, name: str) -> keras.layers.Layer:
    return keras.layers.AlphaDropout(layer.rate, name=name)


@builds("gaussian_noise")
def build_gaussian_noise(layer: spec.GaussianNoise, name: str) -> keras.layers.Layer:
    return keras.layers.GaussianNoise(layer.stddev, name=name)


@builds("gaussian_dropout")
def build_gaussian_dropout(layer: spec.GaussianDropout, name: str) -> keras.layers.Layer:
    return keras.layers.GaussianDropout(layer.rate, name=name)


@builds("activation")
def build_activation(layer: spec.Activation, name: str) -> keras.layers.Layer:
    return keras.layers.Activation(layer.activation, name=name)


@builds("leaky_relu")
def build_leaky_relu(layer: spec.LeakyReLU, name: str) -> keras.layers.Layer:
    return keras.layers.LeakyReLU(negative_slope=layer.negative_slope, name=name)


@builds("prelu")
def build_prelu(layer: spec.PReLU, name: str) -> keras.layers.Layer:
    return keras.layers.PReLU(name=name)


@builds("rrelu")
def build_rrelu(layer: spec.RReLU, name: str) -> keras.layers.Layer:
    return RReLU(lower=layer.lower, upper=layer.upper, name=name)
