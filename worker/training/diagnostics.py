"""Gradient health: per-layer gradient and weight norms, activation statistics, saturated and
dead units, measured at each epoch end on a fixed probe batch of the training rows.

The probe runs in inference mode (no dropout, batch norm on its moving statistics) so it never
changes the model it measures. Keras has no gradient API that works on every backend, so the
gradient step has one branch per backend (TensorFlow tape, JAX grad).
"""

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

SATURATING = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99)}
DEAD_CAPABLE = ("relu",)
VANISHING_RATIO = 1e-3  # first/last dense gradient norm: three orders of magnitude
EXPLODING_RATIO = 1e3

HINTS = {
    "vanishing_gradients": (
        "Gradients shrink by orders of magnitude from the output to the first layers: the "
        "lower layers barely learn. Cures: He initialisation with ReLU/ELU (or LeCun with "
        "SELU), a non-saturating activation, batch normalisation, or a shallower net."
    ),
    "exploding_gradients": (
        "Gradients grow by orders of magnitude towards the first layers (or are not finite). "
        "Cures: gradient clipping (optimizer.clipnorm), a lower learning rate, batch "
        "normalisation, or a scaled initialiser."
    ),
}


def _activation_name(layer: keras.layers.Layer) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", None)
    return name if isinstance(name, str) else None


def _forward_and_gradients(
    probe: keras.Model, x: np.ndarray, y: np.ndarray, loss_fn: Callable[[Any, Any], Any]
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Every layer's output and the loss gradient of every trainable weight, in one pass."""
    variables = probe.trainable_variables
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            outputs = probe(x, training=False)
            loss = loss_fn(y, outputs[-1])
        grads = tape.gradient(loss, variables)
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in probe.non_trainable_variables]

        def loss_of(tv: list[Any]) -> Any:
            outs, _ = probe.stateless_call(tv, non_trainable, x, training=False)
            return loss_fn(y, outs[-1]), outs

        (_, outputs), grads = jax.value_and_grad(loss_of, has_aux=True)(
            [v.value for v in variables]
        )
    else:
        raise NotImplementedError(f"gradient diagnostics on the {backend} backend")
    by_path = {
        v.path: np.zeros(v.shape) if g is None else np.asarray(g)
        for v, g in zip(variables, grads, strict=True)
    }
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outputs], by_path


def _norm(arrays: list[np.ndarray]) -> float | None:
    if not arrays:
        return None
    total = sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)
    return math.sqrt(total)


def _clean(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def measure(
    model: keras.Model,
    probe: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    loss_fn: Callable[[Any, Any], Any],
    gradients: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One record per layer: norms, activation mean/std, saturated and dead fractions.

    `gradients`, when given, receives the gradient of each trainable weight by its path (the
    arrays the norms are taken of; TensorBoard's histograms reuse them).
    """
    outputs, by_path = _forward_and_gradients(probe, x, y, loss_fn)
    if gradients is not None:
        gradients.clear()
        gradients.update(by_path)
    records = []
    for layer, out in zip(model.layers, outputs, strict=True):
        a = out.astype(np.float64)
        weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in layer.trainable_weights]
        layer_grads = [by_path[w.path] for w in layer.trainable_weights if w.path in by_path]
        act = _activation_name(layer)
        saturated = None
        if act in SATURATING:
            low, high = SATURATING[act]
            saturated = float(np.mean((a <= low) | (a >= high)))
        dead = None
        if act in DEAD_CAPABLE and a.ndim >= 2:
            units = a.reshape(len(a), -1)
            dead = float(np.mean(np.all(units <= 0, axis=0)))
        grad_norm = _norm(layer_grads)
        records.append(
            {
                "name": layer.name,
                "class_name": type(layer).__name__,
                "activation": act,
                "gradient_norm": _clean(grad_norm) if layer_grads else None,
                "gradient_finite": grad_norm is None or math.isfinite(grad_norm),
                "weight_norm": _clean(_norm(weights)),
                "activation_mean": _clean(float(a.mean())),
                "activation_std": _clean(float(a.std())),
                "saturated_fraction": saturated,
                "dead_fraction": dead,
            }
        )
    return records


def flags(records: list[dict[str, Any]], epoch: int) -> list[dict[str, Any]]:
    """Vanishing or exploding gradients, judged from the first to the last dense layer."""
    dense = [r for r in records if r["class_name"] == "Dense"]
    if any(not r["gradient_finite"] for r in records):
        return [
            {"code": "exploding_gradients", "epoch": epoch, "message": HINTS["exploding_gradients"]}
        ]
    if len(dense) < 2:
        return []
    first, last = dense[0]["gradient_norm"], dense[-1]["gradient_norm"]
    if first is None or last is None or last == 0:
        return []
    ratio = first / last
    out = []
    if ratio < VANISHING_RATIO:
        out.append(
            {
                "code": "vanishing_gradients",
                "epoch": epoch,
                "ratio": ratio,
                "message": HINTS["vanishing_gradients"],
            }
        )
    elif ratio > EXPLODING_RATIO:
        out.append(
            {
                "code": "exploding_gradients",
                "epoch": epoch,
                "ratio": ratio,
                "message": HINTS["exploding_gradients"],
            }
        )
    return out


class GradientHealth(keras.callbacks.Callback):
    """Measures gradient health at each epoch end and hands the records to `report`."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        loss: str,
        report: Callable[[int, list[dict[str, Any]], list[dict[str, Any]]], None],
    ) -> None:
        super().__init__()
        if y.ndim == 1 and loss != "sparse_categorical_crossentropy":
            y = y.reshape(-1, 1)  # as `fit` does: one target column per output unit
        self.x, self.y = x, y
        per_row = keras.losses.get(loss)
        self.loss_fn = lambda y_true, y_pred: keras.ops.mean(per_row(y_true, y_pred))
        self.report = report
        self.probe: keras.Model | None = None
        self.gradients: dict[str, np.ndarray] = {}  # of the last epoch measured

    def on_train_begin(self, logs: Any = None) -> None:
        # Call the layers anew rather than reading `layer.output`: a reused (cloned) layer's
        # first output belongs to the graph it was cloned in.
        inputs = keras.Input(tuple(self.model.inputs[0].shape[1:]))
        x, outputs = inputs, []
        for layer in self.model.layers:
            x = layer(x)
            outputs.append(x)
        self.probe = keras.Model(inputs, outputs)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        assert self.probe is not None
        records = measure(self.model, self.probe, self.x, self.y, self.loss_fn, self.gradients)
        self.report(epoch + 1, records, flags(records, epoch + 1))
