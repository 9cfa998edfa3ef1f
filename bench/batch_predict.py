"""Batch scoring throughput: 100,000 Fashion-MNIST-shaped rows with mc_samples=100, through
the service (a worker writing Parquet) and as a plain script looping per-chunk Keras calls on
the same model, in the same run. Prints rows per second, their ratio (target: the service
within 1.2x of the script) and the worker's peak RSS for two row counts (bounded memory).

Usage: python bench/batch_predict.py [--rows 100000] [--mc 100]
"""

import argparse
import io
import os
import sys
import tempfile
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from predict_latency import SPEC_LAYERS  # noqa: E402
from service_proc import running_service, wait_job  # noqa: E402
from train_overhead import fashion_like  # noqa: E402


def worker_peak_rss_mib() -> float:
    """VmHWM of the embedded worker process (the celery child of `kts serve`)."""
    peak = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"worker.celery_app" not in fh.read():
                    continue
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peak


def plain_script(model_bytes: bytes, X: np.ndarray, mc: int, chunk: int) -> float:
    """The same work by hand: per chunk, repeat rows mc times, one compiled Keras call with
    dropout on (a careful script; batch norm is absent from this model), mean/std per row."""
    import keras

    with tempfile.NamedTemporaryFile(suffix=".keras", delete=False) as fh:
        fh.write(model_bytes)
    model = keras.saving.load_model(fh.name, compile=False)
    os.unlink(fh.name)

    def call(batch: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(batch, training=True))

    started = time.perf_counter()
    for start in range(0, len(X), chunk):
        part = X[start : start + chunk]
        tiled = np.broadcast_to(part, (mc, *part.shape)).reshape(mc * len(part), *part.shape[1:])
        draws = call(tiled).reshape(mc, len(part), -1)
        draws.mean(axis=0), draws.std(axis=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mc", type=int, default=100)
    args = parser.parse_args()
    X, y = fashion_like(args.rows)
    with running_service() as base:
        small = io.BytesIO()
        np.savez(small, X=X[:3000], y=y[:3000])
        ds_small = httpx.post(
            f"{base}/v1/datasets", files={"file": ("s.npz", small.getvalue())}, timeout=120
        ).json()
        job = wait_job(
            base,
            httpx.post(
                f"{base}/v1/jobs",
                json={
                    "dataset": {"id": ds_small["id"]},
                    "epochs": 1,
                    "seed": 1,
                    "model": {"layers": SPEC_LAYERS},
                },
            ).json()["id"],
            0.2,
        )
        model_id = job["model_id"]
        big = io.BytesIO()
        np.savez(big, X=X, y=y)
        ds = httpx.post(
            f"{base}/v1/datasets", files={"file": ("b.npz", big.getvalue())}, timeout=600
        ).json()
        peaks = {}
        timings = {}
        for name, dataset in (("small", ds_small), ("big", ds)):
            started = time.perf_counter()
            r = httpx.post(
                f"{base}/v1/models/{model_id}/batch-predictions",
                json={"dataset": {"id": dataset["id"]}, "mc_samples": args.mc},
            )
            url = f"{base}/v1/batch-predictions/{r.json()['id']}"
            while (state := httpx.get(url).json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            assert state["status"] == "succeeded", state
            timings[name] = time.perf_counter() - started
            peaks[name] = worker_peak_rss_mib()
        model_bytes = httpx.get(f"{base}/v1/models/{model_id}/artifact").content
    script_s = plain_script(model_bytes, X.astype(np.float32), args.mc, chunk=256)
    service_rate, script_rate = args.rows / timings["big"], args.rows / script_s
    print(f"rows={args.rows} mc_samples={args.mc}")
    print(
        f"service (submit -> succeeded, Parquet written): {timings['big']:.1f} s, "
        f"{service_rate:,.0f} rows/s"
    )
    print(
        f"plain script (per-chunk Keras calls):            {script_s:.1f} s, "
        f"{script_rate:,.0f} rows/s"
    )
    print(f"service time / script time: {timings['big'] / script_s:.2f} (target <= 1.2)")
    print(
        f"worker peak RSS after 3,000 rows: {peaks['small']:.0f} MiB; "
        f"after {args.rows:,} rows: {peaks['big']:.0f} MiB"
    )


if __name__ == "__main__":
    main()
