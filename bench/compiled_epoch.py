"""Seconds per epoch of the batch-norm MLP: Keras `fit` against `fit_compiled`, both under JAX.

The chapter's MLP (Flatten 28x28, BN, Dense 300 ELU, BN, Dense 100 ELU, BN, Dense 10 softmax),
Nadam, batch 32, on synthetic 28x28 rows. Each path trains `--epochs` epochs in one call; the
first epoch (compilation included) is the warm-up and the rest are timed, each epoch from its
begin to its end with the loss read back (so JAX's asynchronous dispatch cannot hide work).
Runs on the CPU and on a GPU if JAX sees one. Usage:
python bench/compiled_epoch.py [--rows 60000] [--epochs 3] [--batch 32] [--budget-bytes N]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported: fit_compiled needs JAX
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from train_overhead import batch_norm_mlp  # noqa: E402  (bench/ is on the path)

from worker.training.compiled import fit_compiled  # noqa: E402


def fashion_like(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 28x28 images in [0, 1] whose class brightens a band of rows, so it learns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    x = rng.integers(0, 200, (rows, 28, 28), dtype=np.uint8)
    for c in range(10):
        x[y == c, c * 2 : c * 2 + 4, :] += 50
    return (x / 255).astype("float32"), y


class EpochTimer(keras.callbacks.Callback):
    """Wall and process CPU time of each epoch, ended when its loss is back on the host.

    CPU seconds (all threads) are printed too: on a shared, loaded machine they vary less
    than wall time, and they show how much of the machine each path keeps busy.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.losses: list[float] = []
        self.started = (0.0, 0.0)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.started = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.losses.append(float((logs or {})["loss"]))  # waits for the epoch's last step
        self.seconds.append(time.perf_counter() - self.started[0])
        self.cpu_seconds.append(time.process_time() - self.started[1])


def after_warm_up(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3, help="the first is the warm-up")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--budget-bytes", type=int, default=1 << 30)
    args = parser.parse_args()
    x, y = fashion_like(args.rows)
    print(f"jax {jax.__version__}, keras {keras.__version__}, devices {jax.devices()}")
    print(f"{args.rows} rows, batch {args.batch}, {args.epochs} epochs (first is warm-up)")

    fit_timer = EpochTimer()
    batch_norm_mlp().fit(
        x, y, batch_size=args.batch, epochs=args.epochs, verbose=0, callbacks=[fit_timer]
    )
    compiled_timer = EpochTimer()
    fit_compiled(
        batch_norm_mlp(),
        x,
        y,
        validation_data=None,
        initial_epoch=0,
        epochs=args.epochs,
        batch_size=args.batch,
        seed=0,
        callbacks=[compiled_timer],
        device_budget_bytes=args.budget_bytes,
    )

    for name, timer in (("fit", fit_timer), ("fit_compiled", compiled_timer)):
        seconds = ", ".join(f"{s:.3f}" for s in timer.seconds)
        cpu = ", ".join(f"{s:.3f}" for s in timer.cpu_seconds)
        losses = ", ".join(f"{v:.4f}" for v in timer.losses)
        print(f"{name:>12}: wall {seconds} s; cpu {cpu} s; losses {losses}")
    for what in ("seconds", "cpu_seconds"):
        fit_s = after_warm_up(getattr(fit_timer, what))
        compiled_s = after_warm_up(getattr(compiled_timer, what))
        print(
            f"{what}/epoch after warm-up (median): fit {fit_s:.3f}, "
            f"fit_compiled {compiled_s:.3f}, ratio fit / fit_compiled {fit_s / compiled_s:.2f}x"
        )
    fit_loss, compiled_loss = fit_timer.losses[-1], compiled_timer.losses[-1]
    print(f"final loss: fit {fit_loss:.4f}, fit_compiled {compiled_loss:.4f}")


if __name__ == "__main__":
    main()
