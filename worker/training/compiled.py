"""Compiled-epoch training on the JAX backend: `fit_compiled`, a drop-in for `model.fit`.

Each epoch is one jitted `jax.lax.scan` over the model's own JAX-trainer `train_step`, so
the losses (regularisation included), metrics, optimizer with its schedule and clipping,
kernel constraints, batch-norm updates and dropout RNG state are Keras's own code, as in
`fit`. Only the loop around it is written here. Where it differs from `fit(verbose=0)`:

- Per-batch callback hooks (`on_train_batch_*`, `on_test_batch_*`) are never called: the
  whole epoch is one compiled call. Callbacks run at train begin/end, epoch begin/end and
  validation begin/end; `model.stop_training` set by one ends training after that epoch.
- Rows are shuffled with JAX's PRNG from `seed` (fit draws from NumPy), so batches differ.
- Epoch logs hold Python floats (fit passes arrays for the training metrics).

Data: x and y go to the device once when they fit in `device_budget_bytes`; otherwise they
go in chunks of whole batches, one scan each, in the same shuffled order, so chunking
changes no step. Each jitted function compiles once per argument shape (full batches, the
last partial batch, a shorter last chunk) and is reused by every epoch of the call.

`step_masks(epoch)` is called after the callbacks' `on_epoch_begin`, while the model's
variables hold the trained weights, so it may compute magnitude masks from them.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras
import numpy as np

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # a TensorFlow-only worker: fit_compiled raises a clear error instead
    jax = None  # type: ignore[assignment]
    jnp = None  # type: ignore[assignment]

Array = Any  # a jax.Array (kept loose: JAX's types are not what mypy checks here)
State = tuple[list[Array], ...]  # (trainable, non-trainable, optimizer, metrics) values
Logs = dict[str, Any]
Masks = list[Array | None]  # one entry per trainable variable
MaskFn = Callable[[int], dict[str, Any] | None]


def fit_compiled(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    validation_data: tuple[np.ndarray, np.ndarray] | None,
    initial_epoch: int,
    epochs: int,
    batch_size: int,
    seed: int,
    callbacks: list[keras.callbacks.Callback],
    step_masks: MaskFn | None = None,
    device_budget_bytes: int = 1 << 30,
) -> None:
    """Train like `model.fit(shuffle=True, verbose=0)` with each epoch one compiled call."""
    _check(model, batch_size)
    train, val = _feeds(x, y, validation_data, batch_size, device_budget_bytes)
    # Build the model, its compiled loss and metrics and the optimizer the way fit does,
    # so that every variable exists before the state is read.
    model._symbolic_build(data_batch=(train.x[:batch_size], train.y[:batch_size]))
    fns = _Compiled(model)
    cbs = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=False,
        model=model,
        verbose=0,
        epochs=epochs,
        steps=math.ceil(train.n / batch_size),
    )
    model.stop_training = False
    cbs.on_train_begin()
    # BackupAndRestore sets this in on_train_begin to resume after the last saved epoch
    initial_epoch = getattr(model, "_initial_epoch", None) or initial_epoch
    key = jax.random.key(seed)
    logs: Logs = {}
    finished = False
    try:
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            cbs.on_epoch_begin(epoch)
            masks = _masks(model, step_masks(epoch) if step_masks is not None else None)
            order = _order(key, epoch, train.n)
            logs = _train_epoch(model, fns, train, order, masks)
            if val is not None:
                logs.update(_validate(model, fns, val, cbs))
            cbs.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        finished = True
    finally:
        if epochs > 0:  # as fit: swaps in EMA weights when the optimizer keeps them
            model.optimizer.finalize_variable_values(model.trainable_weights)
        if finished:
            cbs.on_train_end(logs=logs)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The row order fit_compiled trains epoch `epoch` in (to replay it, e.g. through fit)."""
    return np.asarray(_order(jax.random.key(seed), epoch, n))


def _order(key: Array, epoch: int, n: int) -> Array:
    # a fresh order each epoch, the same ones for the same seed
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def _check(model: keras.Model, batch_size: int) -> None:
    backend = keras.backend.backend()
    if jax is None or backend != "jax":
        raise RuntimeError(
            "fit_compiled runs on the JAX backend only; use model.fit otherwise. "
            f"Expected KERAS_BACKEND=jax. Received: backend={backend}"
        )
    if not getattr(model, "compiled", False):
        raise ValueError("Expected a compiled model: call model.compile(...) first.")
    if keras.distribution.distribution() is not None:
        # the data and state are placed on the default device; sharding is fit's job
        raise ValueError("fit_compiled trains on one device; use model.fit under a distribution.")
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")


def _host(a: np.ndarray) -> np.ndarray:
    """As fit's data adapter: floats become floatx (JAX would drop float64 anyway)."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating) and a.dtype != np.dtype(keras.backend.floatx()):
        a = a.astype(keras.backend.floatx())
    return a


class _Compiled:
    """The jitted train and test scans of one fit_compiled call.

    jax.jit keeps one executable per argument shapes (and mask layout), so the scan over full
    batches, the one-step scan of the last partial batch and, when data come in chunks, the
    scan of a shorter last chunk each compile once and are reused by every later epoch.
    """

    def __init__(self, model: keras.Model) -> None:
        # the train state is donated, as fit does, so that the device holds one copy of it
        self.train = jax.jit(partial(_train_scan, model), donate_argnums=0)
        self.test = jax.jit(partial(_test_scan, model))


def _train_scan(
    model: keras.Model, state: State, x: Array, y: Array, idx: Array, masks: Masks
) -> tuple[Logs, State]:
    """Runs `model.train_step` once per row of `idx` (a batch of row indices into x, y)."""

    def body(carry: State, rows: Array) -> tuple[State, Logs]:
        logs, carry = model.train_step(carry, (x[rows], y[rows]))
        if any(m is not None for m in masks):
            # Keras has no pruning: keep masked weights at exactly 0 after every update
            trainable = [w if m is None else w * m for w, m in zip(carry[0], masks, strict=True)]
            carry = (trainable, *carry[1:])
        return carry, logs

    state, logs = jax.lax.scan(body, state, idx)
    return jax.tree.map(lambda v: v[-1], logs), state


def _test_scan(
    model: keras.Model, state: State, x: Array, y: Array, idx: Array
) -> tuple[Logs, State]:
    """Runs `model.test_step` once per row of `idx`, as evaluate does per batch."""

    def body(carry: State, rows: Array) -> tuple[State, Logs]:
        logs, carry = model.test_step(carry, (x[rows], y[rows]))
        return carry, logs

    state, logs = jax.lax.scan(body, state, idx)
    return jax.tree.map(lambda v: v[-1], logs), state


@dataclass
class _Feed:
    """An (x, y) pair and how its rows reach the device: placed once, or chunk by chunk."""

    x: np.ndarray
    y: np.ndarray
    batch_size: int
    chunk_rows: int
    device: tuple[Array, Array] | None  # the arrays on the device, when they fit the budget
    resident_bytes: int | None

    @property
    def n(self) -> int:
        return len(self.x)

    def pieces(self, order: Array | None) -> Iterator[tuple[Array, Array, Array]]:
        """(x, y, batch row indices) for each compiled call, in `order` (None: as stored)."""
        if self.device is not None:
            rows = jnp.arange(self.n, dtype=jnp.int32) if order is None else order
            for idx in _batches(rows, self.batch_size):
                yield (*self.device, idx)
            return
        host_order = np.arange(self.n) if order is None else np.asarray(order)
        for start in range(0, self.n, self.chunk_rows):
            rows = host_order[start : start + self.chunk_rows]
            xs, ys = jax.device_put(self.x[rows]), jax.device_put(self.y[rows])
            for idx in _batches(np.arange(len(rows), dtype=np.int32), self.batch_size):
                yield xs, ys, idx


def _batches(rows: Array, batch_size: int) -> Iterator[Array]:
    """The full batches as one (steps, batch) block, then the partial batch as (1, rest)."""
    full = len(rows) // batch_size * batch_size
    if full:
        yield rows[:full].reshape(-1, batch_size)
    if full < len(rows):
        # fit trains the remainder too; its own shape compiles once more
        yield rows[full:].reshape(1, -1)


def _feeds(
    x: np.ndarray,
    y: np.ndarray,
    validation_data: tuple[np.ndarray, np.ndarray] | None,
    batch_size: int,
    budget: int,
) -> tuple[_Feed, _Feed | None]:
    """The training and validation feeds; validation gets what training leaves of the budget."""
    x, y = _host(x), _host(y)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"Expected as many rows in y as in x, at least one. Received: {len(x)=}, {len(y)=}"
        )
    train = _feed(x, y, batch_size, budget)
    if validation_data is None:
        return train, None
    left = budget - (train.resident_bytes or 0)
    return train, _feed(_host(validation_data[0]), _host(validation_data[1]), batch_size, left)


def _feed(x: np.ndarray, y: np.ndarray, batch_size: int, budget: int) -> _Feed:
    def row_bytes(a: np.ndarray) -> int:
        itemsize = np.dtype(jax.dtypes.canonicalize_dtype(a.dtype)).itemsize
        return itemsize * math.prod(a.shape[1:])

    per_row = row_bytes(x) + row_bytes(y)
    total = per_row * len(x)
    if total <= budget:
        return _Feed(x, y, batch_size, len(x), (jax.device_put(x), jax.device_put(y)), total)
    # whole batches per chunk, so the batches (and steps) are those of the resident case;
    # at least one batch even when a single batch is over the budget
    rows = max(1, max(budget, 0) // per_row // batch_size) * batch_size
    return _Feed(x, y, batch_size, rows, None, None)


def _read_state(model: keras.Model) -> State:
    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    # The train scan donates its state, and one buffer donated twice is an error: a callback
    # that assigns one variable's value to another leaves them sharing it, so copy repeats.
    seen: set[int] = set()
    state: State = tuple([] for _ in groups)
    for values, variables in zip(state, groups, strict=True):
        for variable in variables:
            value = variable.value
            values.append(jnp.copy(value) if id(value) in seen else value)
            seen.add(id(value))
    return state


def _write(variables: list[Any], values: list[Array]) -> None:
    for ref, value in zip(variables, values, strict=True):
        ref.assign(value)


def _write_state(model: keras.Model, state: State) -> None:
    _write(model.trainable_variables, state[0])
    _write(model.non_trainable_variables, state[1])
    _write(model.optimizer.variables, state[2])
    _write(model.metrics_variables, state[3])


def _masks(model: keras.Model, named: dict[str, Any] | None) -> Masks:
    """This epoch's {variable.path: mask} as one mask (or None) per trainable variable."""
    trainable = model.trainable_variables
    masks: Masks = [None] * len(trainable)
    if not named:
        return masks
    index = {v.path: i for i, v in enumerate(trainable)}
    variables = {v.path: v for v in model.variables}
    for path, mask in named.items():
        if path not in variables:
            raise ValueError(
                "Expected step_masks keys to be variable paths of the model. "
                f"Received: path={path!r}"
            )
        variable = variables[path]
        if tuple(np.shape(mask)) != tuple(variable.shape):
            raise ValueError(
                f"Expected a mask of shape {tuple(variable.shape)} for {path}. "
                f"Received: shape={tuple(np.shape(mask))}"
            )
        value = jnp.asarray(mask, dtype=variable.dtype)
        if path in index:
            masks[index[path]] = value
        else:  # a frozen variable never steps: mask it once so it too holds exact zeros
            variable.assign(variable.value * value)
    return masks


def _train_epoch(
    model: keras.Model, fns: _Compiled, feed: _Feed, order: Array, masks: Masks
) -> Logs:
    """One epoch of training; returns fit's training logs with the state synced back."""
    # read afresh: a callback may have changed the weights or the learning rate
    state = _read_state(model)
    last: Logs = {}
    try:
        for xs, ys, idx in feed.pieces(order):
            last, state = fns.train(state, xs, ys, idx, masks)
    finally:
        # callbacks must see the trained model; on an error, keep the last finished call's state
        _write_state(model, state)
    return _logs(model, last)


def _validate(
    model: keras.Model, fns: _Compiled, feed: _Feed, cbs: keras.callbacks.CallbackList
) -> Logs:
    """The val_* logs, equal to `model.evaluate(batch_size=batch_size)`'s."""
    model.reset_metrics()
    cbs.on_test_begin()
    state: State = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.metrics_variables],
    )
    last: Logs = {}
    for xs, ys, idx in feed.pieces(None):
        last, state = fns.test(state, xs, ys, idx)
    _write(model.non_trainable_variables, state[1])
    _write(model.metrics_variables, state[2])
    logs = _logs(model, last)
    cbs.on_test_end(logs)
    return {f"val_{name}": value for name, value in logs.items()}


def _logs(model: keras.Model, step_logs: Logs) -> Logs:
    # as fit: the model's metric results, unless a custom step returns other keys
    results = model.get_metrics_result()
    if set(results) != set(step_logs):
        results = step_logs
    return {name: float(v) if np.ndim(v) == 0 else np.asarray(v) for name, v in results.items()}
