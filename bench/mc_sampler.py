"""MC Dropout sampler against the naive loop, in-process, under KERAS_BACKEND's backend.

784-300-100-10 MLP with dropout in the top layers (Dense 300 relu, Dense 100 relu,
Dropout 0.2, Dense 10 softmax), 100 samples, 1 row and 256 rows: p50 and p90 of `calls`
timed calls after a warm-up, for `Predictor.sample` (prefix once, the tail compiled) and for
the naive loop of 100 `model(X, training=True)` calls. Also the first call (compilation
included) and the plain predict. Figures only, never asserted.
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


def timed(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    """p50 and p90 in ms of `calls` calls, after one warm-up call."""
    fn(-1)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--naive-calls", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.keras"
        build().save(path)
        predictor = Predictor.load(path, "classification")
    model = predictor.model
    rng = np.random.default_rng(0)
    print(f"backend {keras.backend.backend()}, {SAMPLES} samples, p50 / p90 ms")
    print("| what | rows | p50 ms | p90 ms | first call ms |")
    print("| --- | --- | --- | --- | --- |")
    for rows in (1, 256):
        X = rng.random((rows, 784), dtype=np.float32)
        start = time.perf_counter()
        predictor.sample(X, SAMPLES, seed=0)
        first = (time.perf_counter() - start) * 1e3
        p50, p90 = timed(lambda i, X=X: predictor.sample(X, SAMPLES, seed=i), args.calls)
        print(f"| sampler | {rows} | {p50:.3f} | {p90:.3f} | {first:.0f} |")
        start = time.perf_counter()
        predictor.predict(X)
        first = (time.perf_counter() - start) * 1e3
        p50, p90 = timed(lambda i, X=X: predictor.predict(X), args.calls)
        print(f"| plain predict | {rows} | {p50:.3f} | {p90:.3f} | {first:.0f} |")

        def naive(i: int, X: np.ndarray = X) -> np.ndarray:
            return np.stack(
                [keras.ops.convert_to_numpy(model(X, training=True)) for _ in range(SAMPLES)]
            )

        p50, p90 = timed(naive, args.naive_calls)
        print(f"| naive loop of {SAMPLES} calls | {rows} | {p50:.1f} | {p90:.1f} | |")
    print(f"JAX functions compiled: {predictor.compiled_count}")


if __name__ == "__main__":
    main()
