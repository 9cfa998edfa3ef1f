"""Spec -> compiled Keras model, through the layer registry."""

from typing import Any

import keras
import numpy as np

from service.spec import TrainingSpec
from service.spec.plan import ModelPlan
from worker.build.layers import LAYER_BUILDERS
from worker.build.losses import keras_loss, keras_metrics
from worker.build.optimizers import build_optimizer


def adapted_normalization(X_train: np.ndarray) -> keras.layers.Normalization:
    """Per-feature standardisation fitted on the training rows.

    Constant features get variance 1 rather than 0: Keras would divide by 1e-7 and blow up
    any unseen non-zero value (digits has always-blank pixels).
    """
    axis = tuple(range(1, X_train.ndim))
    layer = keras.layers.Normalization(axis=axis if len(axis) > 1 else -1, name="normalization")
    layer.adapt(X_train)
    variance = keras.ops.convert_to_numpy(layer.adapt_variance)
    layer.adapt_variance.assign(np.where(variance > 1e-12, variance, 1.0))
    layer.finalize_state()
    return layer


def finalize_normalization(model: keras.Model) -> None:
    """Normalization's mean/variance tensors derive from its weights: refresh them after
    the weights were set."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy with the same weights: training it never changes the original.

    (`Sequential(base.layers[:-1] + head)` would share the layers, and training would change
    the base model; `clone_model` alone gives fresh weights.)
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    finalize_normalization(clone)
    return clone


def build_model(
    plan: ModelPlan,
    input_shape: tuple[int, ...],
    X_train: np.ndarray | None,
    base: keras.Model | None = None,
) -> keras.Sequential:
    """The Sequential model of the plan; the Normalization layer is adapted on X_train."""
    layers: list[Any] = [keras.Input(shape=input_shape)]
    reused = list(copy_model(base).layers) if base is not None else []
    for layer in plan.layers:
        if layer.type == "reused":
            layers.append(reused.pop(0))
        elif layer.type == "normalization":
            if X_train is None:
                raise ValueError("normalize_inputs needs the training rows")
            layers.append(adapted_normalization(X_train))
        else:
            layers.append(LAYER_BUILDERS[layer.type](layer.spec, layer.name))
    return keras.Sequential(layers, name="model")


def compile_model(
    model: keras.Model, spec: TrainingSpec, plan: ModelPlan, total_steps: int
) -> None:
    model.compile(
        optimizer=build_optimizer(spec, total_steps),
        loss=keras_loss(plan.loss),
        metrics=keras_metrics(plan.metrics),
    )
