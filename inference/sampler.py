"""Plain and Monte-Carlo-Dropout predictions of a stored model.

MC Dropout: the deterministic layers below the first dropout run once (`prefix`); the
stochastic tail (`sampler`) is a clone in which every dropout layer always drops (batch norm
stays in inference mode and its statistics are never touched) and shares the trained weights.
All N samples of a chunk go through one compiled call, never a Python loop of N model calls.

Under JAX both functions are jitted over `stateless_call` with the weights passed in, one per
batch-size bucket, and each row draws its masks from its own key, derived from the seed and
the row's index: a row's draws do not depend on the other rows, the padding or the chunking
into calls. Under TensorFlow the Keras clones run through `predict_on_batch`.
"""

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from inference import custom_objects  # noqa: F401  (registered before a model loads)
from inference.runtime import init_keras
from inference.statistics import summarise
from inference.summary import MC_SAMPLED

# floats per compiled MC call (64 MB of float32): bounds memory on large requests
CHUNK_VALUES = 16_000_000
PREDICT_ROWS = 4096  # rows per compiled plain call at most
MAX_COMPILED = 64  # compiled JAX functions kept per model (least recently used dropped)
_ALPHA_P = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946  # SELU's


def _jax() -> bool:
    return keras.backend.backend() == "jax"


def _keep_mask_jax(shape: tuple[int, ...], rate: float, seed: Any) -> tuple[Any, float]:
    """Keep mask and keep probability, from one 32-bit draw per two values.

    JAX directly: the random draws are most of an MC call on a CPU, and keras.random spends a
    32-bit draw (a threefry hash) and a float conversion on each value. Comparing 16-bit halves
    with the rate (rounded to 1/65536; the returned keep probability is the exact one, so the
    scaled output stays unbiased) made the 784-300-100-10 benchmark about 4x faster.
    """
    import jax
    import jax.numpy as jnp

    size = math.prod(shape)
    bits = jax.random.bits(seed, ((size + 1) // 2,), jnp.uint32)
    halves = jnp.stack([bits & 0xFFFF, bits >> 16], axis=-1).reshape(-1)[:size].reshape(shape)
    threshold = round(rate * 65536)
    return halves >= threshold, (65536 - threshold) / 65536


def _noise_shape(inputs: Any, noise_shape: Any) -> tuple[int, ...]:
    if noise_shape is None:
        return tuple(inputs.shape)
    return tuple(d if n is None else n for d, n in zip(inputs.shape, noise_shape, strict=True))


class MCDropout(keras.layers.Dropout):
    """Dropout that drops at inference too (for Monte-Carlo sampling only, never saved)."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not _jax() or self.rate == 0:
            return super().call(inputs, training=True)
        shape = _noise_shape(inputs, self.noise_shape)
        keep, keep_prob = _keep_mask_jax(shape, self.rate, self.seed_generator.next())
        return ops.where(keep, inputs / keep_prob, ops.zeros_like(inputs))


class MCAlphaDropout(keras.layers.AlphaDropout):
    """AlphaDropout that drops at inference too."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not _jax() or self.rate == 0:
            return super().call(inputs, training=True)
        # Keras's AlphaDropout math on the faster mask: dropped values go to SELU's
        # saturation value, then an affine map restores zero mean and unit variance
        shape = _noise_shape(inputs, self.noise_shape)
        keep, keep_prob = _keep_mask_jax(shape, self.rate, self.seed_generator.next())
        rate = 1 - keep_prob
        a = (keep_prob * (1 + rate * _ALPHA_P**2)) ** -0.5
        b = -a * _ALPHA_P * rate
        return a * ops.where(keep, inputs, ops.full_like(inputs, _ALPHA_P)) + b


class MCGaussianDropout(keras.layers.GaussianDropout):
    """GaussianDropout (its own class, not a Dropout) that multiplies by noise at inference."""

    def call(self, inputs: Any, training: Any = None) -> Any:
        return super().call(inputs, training=True)


def _mc_variant(layer: keras.layers.Layer) -> keras.layers.Layer:
    name = f"mc_{layer.name}"
    if isinstance(layer, keras.layers.AlphaDropout):
        return MCAlphaDropout(layer.rate, noise_shape=layer.noise_shape, name=name)
    if isinstance(layer, keras.layers.GaussianDropout):
        return MCGaussianDropout(layer.rate, name=name)
    if isinstance(layer, keras.layers.Dropout):
        return MCDropout(layer.rate, noise_shape=layer.noise_shape, name=name)
    return layer  # shared: the trained weights are reused, not copied


def _width(layer: keras.layers.Layer) -> int:
    return max(1, math.prod(d or 1 for d in layer.output.shape[1:]))


def _pow2_at_least(k: int) -> int:
    return 1 << max(0, k - 1).bit_length()


def _pow2_at_most(k: int) -> int:
    return 1 << (max(1, k).bit_length() - 1)


def _samples_bucket(n: int) -> int:
    """N rounded up to m * 2**k with 8 <= m < 16: at most 1/8 of the draws are padding."""
    if n <= 16:
        return n
    shift = n.bit_length() - 4
    return -(-n >> shift) << shift


def _seed_words(seed: int | None) -> list[int]:
    """The seed (random when None) as the two 32-bit words of a threefry key."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    seed %= 2**64
    return [seed >> 32, seed & 0xFFFFFFFF]


def _padded(part: np.ndarray, rows: int) -> np.ndarray:
    if len(part) == rows:
        return part
    padded = np.zeros((rows, *part.shape[1:]), part.dtype)
    padded[: len(part)] = part
    return padded


def _values(model: keras.Model) -> tuple[list[Any], list[Any]]:
    return [v.value for v in model.trainable_variables], [
        v.value for v in model.non_trainable_variables
    ]


def _jax_predict(model: keras.Model, traced: Callable[[], None]) -> Callable[..., Any]:
    import jax

    def run(variables: Any, x: Any) -> Any:
        traced()
        return model.stateless_call(*variables, x, training=False)[0]

    return jax.jit(run)  # type: ignore[no-any-return]


def _jax_sample(
    prefix: keras.Model | None,
    tail: keras.Model,
    seed_slots: list[int],
    n: int,
    traced: Callable[[], None],
) -> Callable[..., Any]:
    """One jitted call: the prefix once, then the tail on n copies of each row.

    JAX directly for the keys and the vmap over rows: Keras has no per-example keys. Row r's
    MC layer j draws from fold_in(fold_in(key, r), first * layers + j), passed in as the
    value of that layer's seed-generator state (`first`: the chunk's first sample, 0 unless
    a very large n is split). Per-row keys cost about 1.4x the XLA compile time of one key
    for the tiled batch, and nothing measurable at run time; keys per (row, sample) cost 4x.
    """
    import jax
    import jax.numpy as jnp

    def run(prefix_vars: Any, tail_vars: Any, x: Any, words: Any) -> Any:
        # words: the key's two words, the chunk's first row and its first sample
        traced()
        h = prefix.stateless_call(*prefix_vars, x, training=False)[0] if prefix else x
        key = jax.random.wrap_key_data(words[:2], impl="threefry2x32")
        trainable, non_trainable = tail_vars
        streams = words[3] * len(seed_slots) + jnp.arange(len(seed_slots), dtype=jnp.uint32)

        def one_row(h_row: Any, row: Any) -> Any:
            row_key = jax.random.fold_in(key, row)
            keys = jax.vmap(lambda i: jax.random.fold_in(row_key, i))(streams)
            states = list(non_trainable)
            for j, slot in enumerate(seed_slots):
                states[slot] = jax.random.key_data(keys[j])
            tiled = jnp.broadcast_to(h_row[None], (n, *h_row.shape))
            return tail.stateless_call(trainable, states, tiled, training=False)[0].reshape(n, -1)

        rows = words[2] + jnp.arange(h.shape[0], dtype=jnp.uint32)
        return jnp.swapaxes(jax.vmap(one_row)(h, rows), 0, 1)

    return jax.jit(run)  # type: ignore[no-any-return]


class Predictor:
    """A loaded model with its compiled plain function and its MC sampler."""

    def __init__(self, model: keras.Model, task: str) -> None:
        self.model = model
        self.task = task
        self.lock = threading.Lock()
        self.compiled_count = 0  # JAX functions compiled so far (one per bucket)
        self._compiled: OrderedDict[tuple[Any, ...], Callable[..., Any]] = OrderedDict()
        layers = list(model.layers)
        input_shape = tuple(model.inputs[0].shape[1:])
        input_width = max(1, math.prod(d or 1 for d in input_shape))
        self._widest = max([input_width, *(_width(layer) for layer in layers)])
        first = next((i for i, layer in enumerate(layers) if isinstance(layer, MC_SAMPLED)), None)
        self.prefix: keras.Model | None = None
        self.sampler: keras.Model | None = None
        self.mc_layers: list[keras.layers.Layer] = []
        if first is None:
            return
        tail_shape = tuple(layers[first - 1].output.shape[1:]) if first > 0 else input_shape
        # values per row and sample held by the tail: sizes the chunks
        self._tail_width = max(
            [max(1, math.prod(d or 1 for d in tail_shape)), *map(_width, layers[first:])]
        )
        if first > 0:
            self.prefix = keras.Sequential([keras.Input(input_shape), *layers[:first]])
        self.sampler = keras.Sequential(
            [keras.Input(tail_shape), *[_mc_variant(layer) for layer in layers[first:]]]
        )
        self.mc_layers = [
            layer
            for layer in self.sampler.layers
            if isinstance(layer, MCDropout | MCAlphaDropout | MCGaussianDropout) and layer.rate > 0
        ]
        states = [id(layer.seed_generator.state) for layer in self.mc_layers]
        self._seed_slots = [
            next(i for i, v in enumerate(self.sampler.non_trainable_variables) if id(v) == s)
            for s in states
        ]

    @property
    def memory_bytes(self) -> int:
        """Estimated footprint: the weights, the MC clone's activations and compiled code."""
        weights = sum(int(np.prod(w.shape)) * 4 for w in self.model.weights)
        return 3 * weights + 1_000_000 * (1 + len(self._compiled))

    @classmethod
    def load(cls, path: Path, task: str) -> "Predictor":
        init_keras()
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        return cls(model, task)

    def _count_trace(self) -> None:
        with self.lock:
            self.compiled_count += 1

    def _function(self, key: tuple[Any, ...], make: Callable[[], Callable[..., Any]]) -> Any:
        with self.lock:
            fn = self._compiled.get(key)
            if fn is None:
                fn = self._compiled[key] = make()
                while len(self._compiled) > MAX_COMPILED:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(key)
            return fn

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Plain (inference-mode) outputs for every row."""
        if not _jax():
            with self.lock:
                return np.asarray(self.model.predict_on_batch(X))
        X = np.asarray(X, dtype=self.model.inputs[0].dtype)
        step = min(PREDICT_ROWS, _pow2_at_most(CHUNK_VALUES // self._widest))
        variables = _values(self.model)
        parts = []
        for start in range(0, len(X), step):
            part = X[start : start + step]
            bucket = _pow2_at_least(len(part))
            fn = self._function(
                ("predict", bucket), partial(_jax_predict, self.model, self._count_trace)
            )
            parts.append(np.asarray(fn(variables, _padded(part, bucket)))[: len(part)])
        if not parts:  # no rows
            return np.zeros((0, *self.model.outputs[0].shape[1:]), np.float32)
        return np.concatenate(parts)

    def sample(self, X: np.ndarray, n: int, seed: int | None) -> np.ndarray:
        """N draws for every row: an array (n, rows, outputs)."""
        if self.sampler is None:
            raise ValueError("the model has no dropout layer")
        if n < 1:
            raise ValueError(f"Expected n >= 1. Received: n={n}")
        if len(X) == 0:
            width = math.prod(d or 1 for d in self.sampler.outputs[0].shape[1:])
            return np.zeros((n, 0, width), np.float32)
        return self._sample_jax(X, n, seed) if _jax() else self._sample_tf(X, n, seed)

    def _sample_jax(self, X: np.ndarray, n: int, seed: int | None) -> np.ndarray:
        prefix, sampler = self.prefix, self.sampler
        assert sampler is not None
        X = np.asarray(X, dtype=self.model.inputs[0].dtype)
        seed_words = _seed_words(seed)
        budget = max(1, CHUNK_VALUES // self._tail_width)  # row-samples per call
        n_bucket = _samples_bucket(n)
        if n_bucket <= budget:  # the prefix's activations count too
            rows_fit = min(budget // n_bucket, CHUNK_VALUES // self._widest)
            row_step, sample_step = _pow2_at_most(rows_fit), n_bucket
        else:  # a very large n: one row at a time, the samples in chunks
            row_step, sample_step = 1, _pow2_at_most(budget)
        prefix_vars = _values(prefix) if prefix is not None else None
        tail_vars = _values(sampler)
        out: np.ndarray | None = None
        for start in range(0, len(X), row_step):
            part = X[start : start + row_step]
            rows = _pow2_at_least(len(part))
            padded = _padded(part, rows)
            for first in range(0, n, sample_step):
                count = min(sample_step, _samples_bucket(n - first))
                fn = self._function(
                    ("sample", rows, count),
                    partial(
                        _jax_sample, prefix, sampler, self._seed_slots, count, self._count_trace
                    ),
                )
                words = np.array([*seed_words, start, first], dtype=np.uint32)
                draws = np.asarray(fn(prefix_vars, tail_vars, padded, words))
                if out is None:
                    out = np.empty((n, len(X), draws.shape[-1]), draws.dtype)
                taken = min(count, n - first)
                out[first : first + taken, start : start + len(part)] = draws[:taken, : len(part)]
        assert out is not None
        return out

    def _seed(self, seed: int | None) -> None:
        base = seed if seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
        for i, layer in enumerate(self.mc_layers):
            state = layer.seed_generator.state
            dtype = keras.backend.standardize_dtype(state.dtype)
            # distinct streams per layer; the counter half starts at 0
            state.assign(np.asarray([(base * 1_000_003 + i * 7919) % 2**31, 0], dtype=dtype))

    def _sample_tf(self, X: np.ndarray, n: int, seed: int | None) -> np.ndarray:
        assert self.sampler is not None
        with self.lock:
            hidden = np.asarray(self.prefix.predict_on_batch(X)) if self.prefix else X
            self._seed(seed)
            width = self._tail_width
            rows_per_chunk = max(1, CHUNK_VALUES // (n * width))
            draws = []
            for start in range(0, len(hidden), rows_per_chunk):
                part = hidden[start : start + rows_per_chunk]
                b = len(part)
                tiled = np.broadcast_to(part, (n, *part.shape)).reshape(n * b, *part.shape[1:])
                step = max(1, CHUNK_VALUES // width)  # one row with a very large n
                out = np.concatenate(
                    [
                        np.asarray(self.sampler.predict_on_batch(tiled[i : i + step]))
                        for i in range(0, len(tiled), step)
                    ]
                )
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
        """Per-row MC statistics (see inference.statistics), with the draws if asked."""
        draws = self.sample(X, n, seed).astype(np.float64)
        rows = summarise(draws, self.task, interval)
        if return_samples:
            for i, row in enumerate(rows):
                row["samples"] = draws[:, i, :].tolist()
        return rows
