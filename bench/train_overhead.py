"""Service overhead on training: the batch-norm MLP, 5 epochs on 60,000 synthetic 28x28 rows.

Once through the service (submit until succeeded, worker warmed by a first job) and once as a
plain Keras script in this process; prints both times and their ratio (target <= 1.10).
Usage: python bench/train_overhead.py [--epochs 5] [--rows 60000] [--url http://...]
"""

import argparse
import io
import os
import statistics
import sys
import time
from datetime import datetime

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from service_proc import running_service, wait_job  # noqa: E402


def fashion_like(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic 28x28 uint8 images whose class shifts the mean of a block, so it learns."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    X = rng.integers(0, 200, (rows, 28, 28), dtype=np.uint8)
    for c in range(10):
        X[y == c, c * 2 : c * 2 + 4, :] += 50
    return X, y


def layers() -> list[dict]:
    return [
        {"type": "flatten"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 300, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"},
        {"type": "batch_normalization"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]


def batch_norm_mlp():  # type: ignore[no-untyped-def]
    """The batch-norm MLP written by hand in Keras, compiled with the service's default."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(300, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(100, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="nadam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def plain_keras(X: np.ndarray, y: np.ndarray, epochs: int) -> float:
    model = batch_norm_mlp()
    started = time.perf_counter()
    Xf = X.astype("float32")  # the service stores float32 rows too
    model.fit(Xf, y, epochs=epochs, batch_size=32, verbose=0)
    model.save(os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench-plain.keras"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    X, y = fashion_like(args.rows)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    service_runs, plain_runs, inside = [], [], []
    with running_service(args.url) as base:
        ds = httpx.post(
            f"{base}/v1/datasets", files={"file": ("fashion.npz", buf.getvalue())}, timeout=300
        ).json()
        spec = {
            "dataset": {"id": ds["id"]},
            "validation_split": 0.0,
            "seed": 1,
            "model": {"normalize_inputs": False, "layers": layers()},
            "epochs": args.epochs,
            "batch_size": 32,
        }
        warm = httpx.post(f"{base}/v1/jobs", json={**spec, "epochs": 1, "batch_size": 4096})
        wait_job(base, warm.json()["id"])
        for _ in range(args.repeats):  # alternate, so that machine noise hits both alike
            started = time.perf_counter()
            job_id = httpx.post(f"{base}/v1/jobs", json=spec).json()["id"]
            job = wait_job(base, job_id, poll=0.25)
            service_runs.append(time.perf_counter() - started)
            assert job["status"] == "succeeded", job
            ts = {k: datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at")}
            inside.append((ts["finished_at"] - ts["started_at"]).total_seconds())
            plain_runs.append(plain_keras(X, y, args.epochs))
    print(f"rows={args.rows} epochs={args.epochs} batch=32 repeats={args.repeats}")
    print(
        "service (submit -> succeeded): "
        + ", ".join(f"{t:.2f}" for t in service_runs)
        + " s  (in the worker: "
        + ", ".join(f"{t:.2f}" for t in inside)
        + " s)"
    )
    print("plain Keras fit + save:        " + ", ".join(f"{t:.2f}" for t in plain_runs) + " s")
    print(
        f"ratio of medians service/plain: "
        f"{statistics.median(service_runs) / statistics.median(plain_runs):.3f}  "
        f"(target <= 1.10); ratio of best runs: {min(service_runs) / min(plain_runs):.3f}"
    )


if __name__ == "__main__":
    main()
