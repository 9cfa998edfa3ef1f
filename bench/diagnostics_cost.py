"""Cost of gradient-health diagnostics: the same `fit` with and without the callback.

Alternates runs to spread machine noise; prints medians and the overhead (target < 5%).
Usage: python bench/diagnostics_cost.py [--rows 60000] [--epochs 3] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from train_overhead import batch_norm_mlp, fashion_like  # noqa: E402

from worker.training.diagnostics import GradientHealth  # noqa: E402


class Timed(GradientHealth):
    """The callback, timing its own work (the precise figure; wall-clock medians are noisy)."""

    spent = 0.0

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        Timed.spent += time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y = fashion_like(args.rows)
    X = X.astype("float32")
    times: dict[str, list[float]] = {"plain": [], "diagnostics": []}
    for _ in range(args.repeats):
        for kind in times:
            callbacks = []
            if kind == "diagnostics":
                callbacks = [
                    Timed(X[:256], y[:256], "sparse_categorical_crossentropy", lambda *a: None)
                ]
            m = batch_norm_mlp()
            started = time.perf_counter()
            m.fit(X, y, epochs=args.epochs, batch_size=32, verbose=0, callbacks=callbacks)
            times[kind].append(time.perf_counter() - started)
    plain, diag = (statistics.median(times[k]) for k in ("plain", "diagnostics"))
    print(f"rows={args.rows} epochs={args.epochs} repeats={args.repeats}")
    print(f"fit without diagnostics: median {plain:.2f} s  {times['plain']}")
    print(f"fit with diagnostics:    median {diag:.2f} s  {times['diagnostics']}")
    print(f"overhead, wall-clock medians: {100 * (diag - plain) / plain:+.1f}%")
    inside = Timed.spent / sum(times["diagnostics"])
    print(f"overhead, time inside the callback / fit time: {100 * inside:.2f}%  (target < 5%)")


if __name__ == "__main__":
    main()
