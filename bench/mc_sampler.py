"""MC Dropout sampler against the naive loop, in-process, under KERAS_BACKEND's backend.

784-300-100-10 MLP with dropout in the top layers (Dense 300 relu, Dense 100 relu,
Dropout 0.2, Dense 10 softmax), 100 samples, 1 row and 256 rows: p50 and p90 of `calls`
timed calls after a warm-up, for `Predictor.sample` (prefix once, the tail compiled) and for
the naive loop of 100 `model(X, training=True)` calls. Also the first call (compilation
included), the plain predict, and (under JAX) the sampler with Keras's own dropout mask in
place of the 16-bit one. Figures only, never asserted; CPU ms is this process's CPU time
(all threads), steadier than wall time on a shared machine.
Usage: KERAS_BACKEND=jax python bench/mc_sampler.py [--calls 50] [--naive-calls 10]
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from inference.sampler import Predictor  # noqa: E402

SAMPLES = 100


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def timed(fn: Callable[[int], object], calls: int) -> str:
    """p50 and p90 wall ms and p50 CPU ms of `calls` calls after one warm-up call, as cells."""
    fn(-1)
    wall, cpu = [], []
    for i in range(calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(i)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    p50, p90, c50 = np.percentile(wall, 50), np.percentile(wall, 90), np.percentile(cpu, 50)
    return f"{p50:.3f} | {p90:.3f} | {c50:.3f}"


def row(what: str, rows: int, fn: Callable[[int], object], calls: int, first: bool) -> None:
    """One table row; the first call (compilation included) is timed on its own."""
    start = time.perf_counter()
    fn(0)
    first_ms = f"{(time.perf_counter() - start) * 1e3:.0f}" if first else ""
    print(f"| {what} | {rows} | {timed(fn, calls)} | {first_ms} |")


def keras_mask_predictor(path: Path) -> Predictor:
    """A predictor whose MCDropout draws Keras's own mask (keras.random.dropout)."""
    import inference.sampler as sampler_module

    class KerasMask(sampler_module.MCDropout):
        def call(self, inputs: object, training: object = None) -> object:
            return keras.layers.Dropout.call(self, inputs, training=True)

    original = sampler_module.MCDropout
    sampler_module.MCDropout = KerasMask  # type: ignore[misc]
    try:
        return Predictor.load(path, "classification")
    finally:
        sampler_module.MCDropout = original  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--naive-calls", type=int, default=10)
    args = parser.parse_args()
    jax = keras.backend.backend() == "jax"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.keras"
        build().save(path)
        predictor = Predictor.load(path, "classification")
        keras_mask = keras_mask_predictor(path) if jax else None
    model = predictor.model
    rng = np.random.default_rng(0)
    print(f"backend {keras.backend.backend()}, {SAMPLES} samples")
    print("| what | rows | p50 ms | p90 ms | CPU p50 ms | first call ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rows in (1, 256):
        X = rng.random((rows, 784), dtype=np.float32)
        predictors = [("sampler", predictor)]
        if keras_mask is not None:
            predictors.append(("sampler, Keras's dropout mask", keras_mask))
        for what, p in predictors:

            def sample(i: int, p: Predictor = p, X: np.ndarray = X) -> np.ndarray:
                return p.sample(X, SAMPLES, seed=i)

            row(what, rows, sample, args.calls, first=True)

        def plain(i: int, X: np.ndarray = X) -> np.ndarray:
            return predictor.predict(X)

        def naive(i: int, X: np.ndarray = X) -> np.ndarray:
            return np.stack(
                [keras.ops.convert_to_numpy(model(X, training=True)) for _ in range(SAMPLES)]
            )

        row("plain predict", rows, plain, args.calls, first=True)
        row(f"naive loop of {SAMPLES} calls", rows, naive, args.naive_calls, first=False)
    print(f"JAX functions compiled: {predictor.compiled_count}")


if __name__ == "__main__":
    main()
