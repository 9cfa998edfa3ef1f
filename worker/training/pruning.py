"""Magnitude pruning of dense kernels, as a Keras callback.

The TensorFlow Model Optimization Toolkit refuses Keras 3 models, so this is written here:
the target sparsity rises along a cubic ramp (Zhu & Gupta 2017) from 0 at `begin_step` to
`target` at `end_step`; masks of the smallest-magnitude weights are recomputed every
`frequency` batches and at `end_step`, and applied after every batch so pruned weights stay 0.
"""

from typing import Any

import keras
import numpy as np


def dense_kernels(model: keras.Model) -> list[tuple[str, Any]]:
    return [
        (layer.name, layer.kernel)
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def sparsity_report(model: keras.Model, target: float) -> dict[str, Any]:
    """Measured fraction of exact zeros, over all dense kernels and per layer."""
    layers, zeros, total = {}, 0, 0
    for name, kernel in dense_kernels(model):
        w = keras.ops.convert_to_numpy(kernel)
        layers[name] = float(np.mean(w == 0))
        zeros += int(np.sum(w == 0))
        total += w.size
    return {
        "target_sparsity": target,
        "sparsity": zeros / total if total else 0.0,
        "layers": layers,
    }


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """Zero exactly round(sparsity * size) of the smallest |w|."""
    k = int(round(sparsity * weights.size))
    mask = np.ones(weights.size, dtype=weights.dtype)
    if k > 0:
        mask[np.argpartition(np.abs(weights).ravel(), k - 1)[:k]] = 0
    return mask.reshape(weights.shape)


class MagnitudePruning(keras.callbacks.Callback):
    def __init__(self, target: float, begin_step: int, end_step: int, frequency: int) -> None:
        super().__init__()
        self.target = target
        self.begin_step = begin_step
        self.end_step = max(end_step, begin_step + 1)
        self.frequency = frequency
        self.step = 0  # batches over the whole job (all phases)
        self.masks: list[Any] | None = None
        self.mask_sparsity = 0.0
        self.resume_masks: list[np.ndarray] | None = None  # from a checkpoint

    def sparsity_at(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        if step >= self.end_step:
            return self.target
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.target * (1 - (1 - progress) ** 3)

    def _recompute(self, sparsity: float) -> None:
        self.masks = [
            keras.ops.convert_to_tensor(
                magnitude_mask(keras.ops.convert_to_numpy(kernel), sparsity), kernel.dtype
            )
            for _, kernel in dense_kernels(self.model)
        ]
        self.mask_sparsity = sparsity

    def _apply(self) -> None:
        if self.masks is None:
            return
        for (_, kernel), mask in zip(dense_kernels(self.model), self.masks, strict=True):
            kernel.assign(keras.ops.multiply(kernel, mask))

    def on_train_begin(self, logs: Any = None) -> None:
        if self.resume_masks is not None:
            self.masks = [
                keras.ops.convert_to_tensor(mask, kernel.dtype)
                for mask, (_, kernel) in zip(
                    self.resume_masks, dense_kernels(self.model), strict=True
                )
            ]
            self.resume_masks = None

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        sparsity = self.sparsity_at(self.step)
        if (
            sparsity > 0
            and sparsity != self.mask_sparsity
            and (
                self.masks is None or self.step % self.frequency == 0 or self.step >= self.end_step
            )
        ):
            self._recompute(sparsity)
        self._apply()

    def epoch_masks(self, steps: int) -> dict[str, Any] | None:
        """Compiled epochs (no batch hooks): the masks for the sparsity the ramp reaches at the
        epoch's last step, applied after every step of the epoch by the compiled function."""
        self.step += steps
        sparsity = self.sparsity_at(self.step)
        if sparsity > 0 and sparsity != self.mask_sparsity:
            self._recompute(sparsity)
        if self.masks is None:
            return None
        kernels = dense_kernels(self.model)
        return {kernel.path: mask for (_, kernel), mask in zip(kernels, self.masks, strict=True)}

    def on_train_end(self, logs: Any = None) -> None:
        self._apply()  # after EarlyStopping may have restored earlier weights
