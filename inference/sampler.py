"""Plain and Monte-Carlo-Dropout predictions of a stored model.

MC Dropout: the deterministic layers below the first dropout run once; the stochastic tail is
a clone in which every dropout layer always drops (batch norm stays in inference mode and its
statistics are never touched) and shares the trained layers' weights. All N samples of a chunk
go through one compiled call on N copies of the rows, never a Python loop of N model calls.
"""

import os
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np

from inference import custom_objects  # noqa: F401  (registered before a model loads)
from inference.runtime import init_keras
from inference.statistics import summarise

# floats per compiled MC call (64 MB of float32): bounds memory on large requests
CHUNK_VALUES = 16_000_000


class MCDropout(keras.layers.Dropout):
    """Dropout that drops at inference too (for Monte-Carlo sampling only, never saved)."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        return super().call(inputs, training=True)


class MCAlphaDropout(keras.layers.AlphaDropout):
    """AlphaDropout that drops at inference too."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        return super().call(inputs, training=True)


def _mc_variant(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, keras.layers.AlphaDropout):
        return MCAlphaDropout(layer.rate, name=f"mc_{layer.name}")
    if isinstance(layer, keras.layers.Dropout):
        return MCDropout(layer.rate, noise_shape=layer.noise_shape, name=f"mc_{layer.name}")
    return layer  # shared: the trained weights are reused, not copied


class Predictor:
    """A loaded model with its compiled plain function and its MC sampler."""

    def __init__(self, model: keras.Model, task: str) -> None:
        self.model = model
        self.task = task
        self.lock = threading.Lock()
        layers = list(model.layers)
        first = next(
            (
                i
                for i, layer in enumerate(layers)
                if isinstance(layer, keras.layers.Dropout | keras.layers.AlphaDropout)
            ),
            None,
        )
        self.prefix: keras.Model | None = None
        self.sampler: keras.Model | None = None
        if first is not None:
            input_shape = tuple(model.inputs[0].shape[1:])
            if first > 0:
                self.prefix = keras.Sequential([keras.Input(input_shape), *layers[:first]])
                tail_shape = tuple(layers[first - 1].output.shape[1:])
            else:
                tail_shape = input_shape
            self.sampler = keras.Sequential(
                [keras.Input(tail_shape), *[_mc_variant(layer) for layer in layers[first:]]]
            )
            self.mc_layers = [
                layer
                for layer in self.sampler.layers
                if isinstance(layer, MCDropout | MCAlphaDropout)
            ]

    @property
    def memory_bytes(self) -> int:
        """Estimated footprint: the weights, the MC clone's activations and compiled code."""
        weights = sum(int(np.prod(w.shape)) * 4 for w in self.model.weights)
        return 3 * weights + 1_000_000

    @classmethod
    def load(cls, path: Path, task: str) -> "Predictor":
        init_keras()
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return cls(model, task)

    def predict(self, X: np.ndarray) -> np.ndarray:
        with self.lock:
            return np.asarray(self.model.predict_on_batch(X))

    def _seed(self, seed: int | None) -> None:
        base = seed if seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        for i, layer in enumerate(self.mc_layers):
            state = layer.seed_generator.state
            dtype = keras.backend.standardize_dtype(state.dtype)
            # distinct streams per layer; the counter half starts at 0
            state.assign(np.asarray([(base * 1_000_003 + i * 7919) % 2**31, 0], dtype=dtype))

    def sample(self, X: np.ndarray, n: int, seed: int | None) -> np.ndarray:
        """N draws for every row: an array (n, rows, outputs)."""
        if self.sampler is None:
            raise ValueError("the model has no dropout layer")
        with self.lock:
            hidden = np.asarray(self.prefix.predict_on_batch(X)) if self.prefix else X
            self._seed(seed)
            width = max(1, int(np.prod(hidden.shape[1:])))
            rows_per_chunk = max(1, CHUNK_VALUES // (n * width))
            draws = []
            for start in range(0, len(hidden), rows_per_chunk):
                part = hidden[start : start + rows_per_chunk]
                b = len(part)
                tiled = np.broadcast_to(part, (n, *part.shape)).reshape(n * b, *part.shape[1:])
                if len(tiled) > CHUNK_VALUES // width:  # one row with a very large n
                    out = np.concatenate(
                        [
                            np.asarray(
                                self.sampler.predict_on_batch(tiled[i : i + CHUNK_VALUES // width])
                            )
                            for i in range(0, len(tiled), CHUNK_VALUES // width)
                        ]
                    )
                else:
                    out = np.asarray(self.sampler.predict_on_batch(tiled))
                draws.append(out.reshape(n, b, -1))
            return np.concatenate(draws, axis=1)

    def predict_mc(
        self,
        X: np.ndarray,
        n: int,
        seed: int | None,
        return_samples: bool = False,
        interval: float | None = None,
    ) -> list[dict[str, Any]]:
        draws = self.sample(X, n, seed).astype(np.float64)
        rows = summarise(draws, self.task, interval)
        if return_samples:
            for i, row in enumerate(rows):
                row["samples"] = draws[:, i, :].tolist()
        return rows
