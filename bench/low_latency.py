"""Low-latency and sparse models through the service.

1. Batch-norm folding of the batch-norm MLP (Fashion-MNIST-shaped rows): largest output
   difference (target <= 1e-5) and single-row latency before/after (target: lower).
2. Pruning the digits MLP to 80% sparsity: validation accuracy against the same MLP unpruned
   (target: at most 1 point lost).
Usage: python bench/low_latency.py [--rows 10000] [--url http://...]
"""

import argparse
import io
import os
import sys

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from service_proc import running_service, wait_job  # noqa: E402
from train_overhead import fashion_like, layers  # noqa: E402

DIGITS_MLP = [
    {"type": "dense", "units": 300, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


def train(base: str, spec: dict) -> dict:
    job = wait_job(base, httpx.post(f"{base}/v1/jobs", json=spec, timeout=60).json()["id"], 0.2)
    assert job["status"] == "succeeded", job
    return job


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    X, y = fashion_like(args.rows)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    with running_service(args.url) as base:
        ds = httpx.post(
            f"{base}/v1/datasets", files={"file": ("f.npz", buf.getvalue())}, timeout=120
        ).json()
        job = train(
            base,
            {
                "dataset": {"id": ds["id"]},
                "epochs": 2,
                "seed": 1,
                "model": {"normalize_inputs": False, "layers": layers()},
            },
        )
        r = httpx.post(
            f"{base}/v1/models/{job['model_id']}/optimize", json={"fold_batch_norm": True}
        )
        folded = wait_job(base, r.json()["id"], 0.2)
        report = httpx.get(f"{base}/v1/models/{folded['model_id']}").json()["optimization"]
        print("batch-norm folding, batch-norm MLP:")
        print(
            f"  largest output difference: {report['max_abs_output_difference']:.2e} "
            "(target <= 1e-5)"
        )
        lat = report["single_row_latency_ms"]
        print(f"  single-row latency: {lat['before']:.3f} ms -> {lat['after']:.3f} ms")
        sizes = report["file_size_bytes"]
        print(f"  file size: {sizes['before']:,} -> {sizes['after']:,} bytes")

        common = {
            "dataset": {"builtin": "digits"},
            "epochs": 30,
            "seed": 3,
            "model": {"layers": DIGITS_MLP},
        }
        dense = train(base, common)
        pruned = train(
            base, {**common, "pruning": {"target_sparsity": 0.8, "begin_epoch": 5, "end_epoch": 20}}
        )
        sparsity = httpx.get(f"{base}/v1/models/{pruned['model_id']}").json()["pruning"]
        a, b = dense["metrics"]["val_accuracy"], pruned["metrics"]["val_accuracy"]
        print("pruning the digits MLP:")
        print(f"  measured sparsity {sparsity['sparsity']:.4f} (target 0.8)")
        print(
            f"  val accuracy: dense {a:.4f}, pruned {b:.4f}, "
            f"difference {100 * (b - a):+.2f} points (target >= -1)"
        )


if __name__ == "__main__":
    main()
