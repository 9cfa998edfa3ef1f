"""fit_compiled (worker/training/compiled.py) against model.fit, under the JAX backend.

The session's Keras backend may be TensorFlow, so the checks run in subprocesses with
KERAS_BACKEND=jax and print their figures as JSON; the tests assert on those. Checks are grouped
so JAX starts five times, not twenty, and the groups run two at a time (one per core here) from
a module fixture, since XLA compiling each small model is most of the cost.

Most comparisons *replay* fit on the compiled path's batches: fit_compiled trains epoch e in
`epoch_order(seed, e, n)`, so `model.fit(x[order], y[order], shuffle=False)`, one epoch per
call, sees the same batches and the same dropout / AlphaDropout / RReLU draws (they come from
the model's own seed-generator state, which both paths advance once per step). Both then run
Keras's own train step on the same numbers, so they must agree to float rounding: REPLAY_RTOL.
Callback checks compare with an ordinary shuffled fit, where only the loose FIT_RTOL can hold.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Same batches and draws: only XLA fusing the step differently inside the scan could round
# differently (on this CPU the two paths came out bitwise equal; the margin is for GPUs).
REPLAY_RTOL = 1e-4
# An ordinary fit shuffles with NumPy, so its batches differ: after 3 epochs on 300 digits rows
# (loss about 0.45) the two final losses were within 10% of each other for four seeds here.
FIT_RTOL = 0.3
N, BATCH, EPOCHS = 300, 32, 3
STEPS = math.ceil(N / BATCH)  # 10: nine full batches and one of 12 rows, as fit counts them

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="fit_compiled needs JAX installed"
)

PRELUDE = """
import json, math, sys
# keras.utils.set_random_seed would import TensorFlow (4 s here) only to seed it too
sys.modules["tensorflow"] = None
import keras
import numpy as np
from sklearn.datasets import load_digits
from worker.training.compiled import epoch_order, fit_compiled

N, BATCH, EPOCHS, SEED = {n}, {batch}, {epochs}, 5
L = keras.layers
digits = load_digits()
X_ALL = (digits.data / 16).astype("float32")
X, Y, XV, YV = X_ALL[:N], digits.target[:N], X_ALL[N:N + 100], digits.target[N:N + 100]
out = {{}}


def fresh(make):
    # seeded before make() creates its layers: they draw their initializer and dropout seeds
    # when constructed, so both paths start from the same weights and seed-generator state
    keras.utils.set_random_seed(1)
    return make()


def build(*layers, optimizer=None):
    model = keras.Sequential([keras.Input((64,)), *layers])
    model.compile(
        optimizer=optimizer if optimizer is not None else keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def mlp(optimizer=None):
    return lambda: build(L.Dense(16, activation="elu"), L.Dense(10, "softmax"),
                         optimizer=optimizer() if optimizer else None)


def replay(make, epochs=EPOCHS, callbacks=()):
    model = fresh(make)
    for epoch in range(epochs):
        order = epoch_order(SEED, epoch, N)
        history = model.fit(
            X[order], Y[order], batch_size=BATCH, initial_epoch=epoch, epochs=epoch + 1,
            shuffle=False, verbose=0, callbacks=list(callbacks),
        )
    return model, history.history["loss"][-1]


def compiled(make, epochs=EPOCHS, callbacks=(), seed=SEED, validation=False, masks=None,
             **kwargs):
    model = fresh(make)
    if masks is not None:  # {{layer index: kernel mask}}; a path includes the model's name
        named = {{model.layers[i].kernel.path: m for i, m in masks.items()}}
        kwargs["step_masks"] = lambda epoch: named
    fit_compiled(
        model, X, Y, validation_data=(XV, YV) if validation else None, initial_epoch=0,
        epochs=epochs, batch_size=BATCH, seed=seed, callbacks=list(callbacks), **kwargs,
    )
    return model, model.history.history


def weight_gap(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a.get_weights(), b.get_weights()))


def compare(name, make, fit_callbacks=(), **kwargs):
    fit_model, fit_loss = replay(make, callbacks=fit_callbacks)
    model, history = compiled(make, **kwargs)
    out[name] = {{
        "fit_loss": fit_loss, "loss": history["loss"][-1], "epochs": len(history["loss"]),
        "gap": weight_gap(fit_model, model),
        "iterations": int(model.optimizer.iterations),
        "fit_iterations": int(fit_model.optimizer.iterations),
    }}
    return fit_model, model
"""

LAYERS = """
compare("plain", mlp())
compare("batch_norm", lambda: build(
    L.Dense(16, activation="elu"), L.BatchNormalization(), L.Dense(10, "softmax"),
    optimizer=keras.optimizers.Nadam(1e-2)))
compare("dropout", lambda: build(
    L.Dense(16, activation="elu"), L.Dropout(0.3), L.Dense(10, "softmax")))
compare("alpha_dropout", lambda: build(
    L.Dense(16, activation="selu", kernel_initializer="lecun_normal"),
    L.AlphaDropout(0.2), L.Dense(10, "softmax")))
compare("l1_l2", lambda: build(
    L.Dense(16, activation="elu", kernel_regularizer=keras.regularizers.L1L2(1e-3, 1e-2)),
    L.Dense(10, "softmax")))
_, model = compare("max_norm", lambda: build(
    L.Dense(16, activation="elu", kernel_constraint=keras.constraints.MaxNorm(0.5)),
    L.Dense(10, "softmax"), optimizer=keras.optimizers.SGD(0.5)))
kernel = np.asarray(model.layers[0].kernel)
out["max_norm"]["max_column_norm"] = float(np.linalg.norm(kernel, axis=0).max())
"""

OPTIMIZERS = """
# limits small enough that clipping changes every step
compare("clipnorm", mlp(lambda: keras.optimizers.SGD(0.1, clipnorm=0.05)))
compare("clipvalue", mlp(lambda: keras.optimizers.SGD(0.1, clipvalue=0.002)))
compare("global_clipnorm", mlp(lambda: keras.optimizers.SGD(0.1, global_clipnorm=0.05)))
decay = lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 5, 0.5)
_, model = compare("exponential_decay", mlp(lambda: keras.optimizers.SGD(decay())))
out["exponential_decay"]["learning_rate"] = float(model.optimizer.learning_rate)
"""

CALLBACKS = """
class Snapshot(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights, self.rates = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.rates.append(float(self.model.optimizer.learning_rate))


def plateau():  # "loss" never improves by 10: the rate drops at every epoch after the first
    return keras.callbacks.ReduceLROnPlateau("loss", factor=1e-8, patience=0, min_delta=10)


# no momentum, so that nothing moves the weights once the rate has dropped
make = mlp(lambda: keras.optimizers.SGD(0.3))
snap = Snapshot()
model, history = compiled(make, callbacks=[plateau(), snap], validation=True)
fit_model = fresh(make)
fit_history = fit_model.fit(X, Y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                            validation_data=(XV, YV), callbacks=[plateau()]).history
val = model.evaluate(XV, YV, batch_size=BATCH, verbose=0, return_dict=True)
out["plateau"] = {
    "rates": snap.rates, "fit_rate": float(fit_model.optimizer.learning_rate),
    "moved": [float(np.max(np.abs(a[0] - b[0]))) for a, b in zip(snap.weights, snap.weights[1:])],
    "loss": history["loss"][-1], "fit_loss": fit_history["loss"][-1],
    "keys": sorted(history), "fit_keys": sorted(fit_history),
    "val_loss": history["val_loss"][-1], "evaluate_loss": val["loss"],
    "val_accuracy": history["val_accuracy"][-1], "evaluate_accuracy": val["accuracy"],
}


def stopper():  # no later epoch improves by 10: stops after epoch 1, back to epoch 0's weights
    return keras.callbacks.EarlyStopping("loss", min_delta=10, patience=1,
                                         restore_best_weights=True)


snap = Snapshot()
model, history = compiled(make, epochs=10, callbacks=[snap, stopper()])
fit_history = fresh(make).fit(X, Y, batch_size=BATCH, epochs=10, verbose=0,
                               callbacks=[stopper()]).history
out["early_stopping"] = {
    "epochs": len(history["loss"]), "fit_epochs": len(fit_history["loss"]),
    "iterations": int(model.optimizer.iterations),
    "restored": all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snap.weights[0])),
}
"""

FEEDING = """
def frozen_and_pruned():  # a frozen first layer, a pruned (masked) second one
    model = build(L.Dense(16, activation="elu"), L.Dense(10, "softmax"),
                  optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.layers[0].trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


mask = (np.random.default_rng(0).random((16, 10)) > 0.5).astype("float32")


class MaskAfterBatch(keras.callbacks.Callback):  # what fit needs to do the same
    def on_train_batch_end(self, batch, logs=None):
        kernel = self.model.layers[1].kernel  # self.model syncs fit's JAX state first
        kernel.assign(kernel * mask)


_, model = compare("frozen_pruned", frozen_and_pruned, fit_callbacks=[MaskAfterBatch()],
                   masks={1: mask})
start = fresh(frozen_and_pruned)
pruned = np.asarray(model.layers[1].kernel)
out["frozen_pruned"].update({
    "frozen_moved": float(np.max(np.abs(model.layers[0].kernel - start.layers[0].kernel))),
    "head_moved": float(np.max(np.abs(model.layers[1].bias - start.layers[1].bias))),
    "masked_nonzero": int(np.count_nonzero(pruned[mask == 0])),
    "kept_zero": int(np.count_nonzero(pruned[mask == 1] == 0)),
})

traces = []


class CountTraces(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        traces.append(len(shapes))


def counted():  # train_step runs only while JAX traces a new shape
    model = mlp()()
    step = model.train_step

    def counting_step(state, data):
        shapes.append(tuple(data[0].shape))
        return step(state, data)

    model.train_step = counting_step
    return model


shapes = []
first, _ = compiled(counted, callbacks=[CountTraces()])
again, _ = compiled(mlp())
# two batches of training rows per chunk; validation rows in chunks too
chunked, history = compiled(mlp(), device_budget_bytes=20_000, validation=True)
val = chunked.evaluate(XV, YV, batch_size=BATCH, verbose=0, return_dict=True)
out["feeding"] = {
    "traces": traces, "shapes": sorted(set(shapes)),
    "same_seed_gap": weight_gap(first, again), "chunked_gap": weight_gap(first, chunked),
    "chunked_val_loss": history["val_loss"][-1], "evaluate_loss": val["loss"],
    "orders_differ": bool(np.any(epoch_order(SEED, 0, N) != epoch_order(SEED, 1, N))),
    "seeds_differ": bool(np.any(epoch_order(SEED, 0, N) != epoch_order(SEED + 1, 0, N))),
}
try:
    fit_compiled(keras.Sequential([keras.Input((64,)), L.Dense(10)]), X, Y,
                 validation_data=None, initial_epoch=0, epochs=1, batch_size=BATCH, seed=0,
                 callbacks=[])
except ValueError as error:
    out["uncompiled"] = str(error)
"""

CUSTOM_OBJECTS = """
from inference.custom_objects import OneCycle, OneCycleSGD, RReLU

total = EPOCHS * math.ceil(N / BATCH)


def make():
    optimizer = OneCycleSGD(total_steps=total, learning_rate=OneCycle(total, 0.1),
                            momentum=0.95, min_momentum=0.85)
    return build(L.Dense(16), RReLU(seed=3), L.Dense(10, "softmax"), optimizer=optimizer)


class Momentum(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(float(self.model.optimizer.current_momentum()))


fit_momentum, momentum = Momentum(), Momentum()
compare("one_cycle", make, fit_callbacks=[fit_momentum], callbacks=[momentum])
out["one_cycle"].update({"momentum": momentum.values, "fit_momentum": fit_momentum.values})
"""

OTHER_BACKEND = """
import keras, numpy as np
from worker.training.compiled import fit_compiled

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
try:
    fit_compiled(model, np.zeros((8, 4)), np.zeros(8), validation_data=None, initial_epoch=0,
                 epochs=1, batch_size=4, seed=0, callbacks=[])
except RuntimeError as error:
    print(json.dumps({"error": str(error)}))
"""

GROUPS = {
    "layers": LAYERS,
    "optimizers": OPTIMIZERS,
    "callbacks": CALLBACKS,
    "feeding": FEEDING,
    "custom_objects": CUSTOM_OBJECTS,
}


def run_script(path: Path, source: str, backend: str) -> dict[str, Any]:
    """Runs `source` under KERAS_BACKEND=backend; returns the JSON of its last line."""
    path.write_text(source)
    env = {
        **{k: v for k, v in os.environ.items() if k != "KTS_BACKEND"},  # KERAS_BACKEND decides
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """Every group's figures, computed two subprocesses at a time."""
    folder = tmp_path_factory.mktemp("compiled_epoch")
    prelude = PRELUDE.format(n=N, batch=BATCH, epochs=EPOCHS)
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            name: pool.submit(
                run_script,
                folder / f"check_{name}.py",
                prelude + textwrap.dedent(body) + "\nprint(json.dumps(out))\n",
                "jax",
            )
            for name, body in GROUPS.items()
        }


def assert_replays_fit(got: dict[str, Any], epochs: int = EPOCHS) -> None:
    assert got["loss"] == pytest.approx(got["fit_loss"], rel=REPLAY_RTOL)
    assert got["gap"] < REPLAY_RTOL  # largest weight difference
    assert got["epochs"] == epochs
    # one step per batch, the last partial one included
    assert got["iterations"] == got["fit_iterations"] == epochs * STEPS


def test_chapter_layers_train_as_in_fit(groups: dict[str, Future[Any]]) -> None:
    figures = groups["layers"].result()
    for name in ("plain", "batch_norm", "dropout", "alpha_dropout", "l1_l2", "max_norm"):
        assert_replays_fit(figures[name])
    # MaxNorm rescales every column whose norm passes 0.5, after each step
    assert figures["max_norm"]["max_column_norm"] <= 0.5 + 1e-5


def test_clipping_and_schedules_train_as_in_fit(groups: dict[str, Future[Any]]) -> None:
    figures = groups["optimizers"].result()
    for name in ("clipnorm", "clipvalue", "global_clipnorm", "exponential_decay"):
        assert_replays_fit(figures[name])
    # the schedule saw fit's step count: 0.1 * 0.5 ** (30 steps / 5)
    assert figures["exponential_decay"]["learning_rate"] == pytest.approx(0.1 * 0.5**6, rel=1e-5)


def test_callbacks_see_and_change_the_model(groups: dict[str, Future[Any]]) -> None:
    figures = groups["callbacks"].result()
    plateau = figures["plateau"]
    assert plateau["rates"] == pytest.approx([0.3, 0.3e-8, 0.3e-16], rel=1e-5)
    assert plateau["fit_rate"] == pytest.approx(plateau["rates"][-1], rel=1e-5)
    # the last epoch trained at the lowered rate: the weights barely moved
    assert plateau["moved"][0] > 1e-2 and plateau["moved"][1] < 1e-4 * plateau["moved"][0]
    assert plateau["loss"] == pytest.approx(plateau["fit_loss"], rel=FIT_RTOL)
    assert plateau["keys"] == plateau["fit_keys"]  # loss, accuracy, val_*, learning_rate
    assert plateau["val_loss"] == pytest.approx(plateau["evaluate_loss"], rel=1e-6)
    assert plateau["val_accuracy"] == pytest.approx(plateau["evaluate_accuracy"], rel=1e-6)
    stopping = figures["early_stopping"]
    assert stopping["epochs"] == stopping["fit_epochs"] == 2
    assert stopping["iterations"] == 2 * STEPS
    assert stopping["restored"]


def test_frozen_layers_masks_feeding_and_determinism(groups: dict[str, Future[Any]]) -> None:
    figures = groups["feeding"].result()
    pruned = figures["frozen_pruned"]
    assert_replays_fit(pruned)
    assert pruned["frozen_moved"] == 0.0 and pruned["head_moved"] > 1e-3
    assert pruned["masked_nonzero"] == 0 and pruned["kept_zero"] == 0
    feeding = figures["feeding"]
    # one trace per batch shape (32 rows, then the 12 left) in the first epoch, none later
    assert feeding["traces"] == [2, 2, 2]
    assert feeding["shapes"] == [[12, 64], [32, 64]]
    assert feeding["same_seed_gap"] == 0.0  # the same seed: bit for bit
    assert feeding["orders_differ"] and feeding["seeds_differ"]
    # chunks hold whole batches, so chunked feeding trains the very same steps
    assert feeding["chunked_gap"] < REPLAY_RTOL
    assert feeding["chunked_val_loss"] == pytest.approx(feeding["evaluate_loss"], rel=1e-6)
    assert "compile" in figures["uncompiled"]


def test_service_custom_objects_train(groups: dict[str, Future[Any]]) -> None:
    got = groups["custom_objects"].result()["one_cycle"]
    assert_replays_fit(got)
    assert got["momentum"] == pytest.approx(got["fit_momentum"], rel=1e-6)
    # 30 steps: down from 0.95 until step 13.5, back up until 27, then held at 0.95
    assert got["momentum"] == pytest.approx([0.95 - 0.1 * 10 / 13.5, 0.85 + 0.1 * 6.5 / 13.5, 0.95])


def test_refuses_other_backends(tmp_path: Path) -> None:
    # NumPy backend: starts in a second, where TensorFlow would take several
    got = run_script(tmp_path / "check_other_backend.py", "import json\n" + OTHER_BACKEND, "numpy")
    assert "JAX backend" in got["error"]
