"""Prediction latency through HTTP: plain and MC Dropout (100 samples), 1 and 256 rows.

Against the naive MC loop (100 calls of `model(X, training=True)`) on the same stored model,
in the same run. Targets (2-core machine): MC 1 row p50 <= 10 ms and >= 50x the loop.
Usage: python bench/predict_latency.py [--requests 200] [--url http://...]
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from service_proc import running_service, wait_job  # noqa: E402
from train_overhead import fashion_like  # noqa: E402

SPEC_LAYERS = [
    {"type": "flatten"},
    {"type": "dense", "units": 300, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 100, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.asarray(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def http_latency(client: httpx.Client, url: str, body: dict, n: int) -> tuple[float, float]:
    content = json.dumps(body).encode()  # encoded once: the client's encoding is not timed
    headers = {"content-type": "application/json"}
    for _ in range(3):  # warm-up: load, trace
        assert client.post(url, content=content, headers=headers).status_code == 200
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.post(url, content=content, headers=headers)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200
    return percentiles(times)


def naive_loop(model_path: str, X: np.ndarray, n: int, repeats: int) -> tuple[float, float]:
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    model(X, training=True)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        draws = np.stack([keras.ops.convert_to_numpy(model(X, training=True)) for _ in range(n)])
        draws.mean(axis=0)
        times.append(time.perf_counter() - started)
    return percentiles(times)


def tflite_latency(content: bytes, X: np.ndarray, repeats: int) -> tuple[float, float]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=content)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(X.shape))
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]["index"]
    times = []
    for _ in range(repeats + 3):
        started = time.perf_counter()
        interpreter.set_tensor(index, X)
        interpreter.invoke()
        interpreter.get_tensor(out)
        times.append(time.perf_counter() - started)
    return percentiles(times[3:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    X, y = fashion_like(3000)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    rows = {1: X[:1].astype(float).tolist(), 256: X[:256].astype(float).tolist()}
    results = {}
    with running_service(args.url) as base:
        ds = httpx.post(f"{base}/v1/datasets", files={"file": ("f.npz", buf.getvalue())}).json()
        spec = {
            "dataset": {"id": ds["id"]},
            "epochs": 2,
            "seed": 1,
            "model": {"layers": SPEC_LAYERS},
        }
        job = wait_job(base, httpx.post(f"{base}/v1/jobs", json=spec).json()["id"])
        assert job["status"] == "succeeded", job
        model_id = job["model_id"]
        url = f"{base}/v1/models/{model_id}/predict"
        with httpx.Client(timeout=120) as client:
            for n_rows, inst in rows.items():
                reps = args.requests if n_rows == 1 else max(20, args.requests // 10)
                results[("plain", n_rows)] = http_latency(client, url, {"instances": inst}, reps)
                results[("mc100", n_rows)] = http_latency(
                    client, url, {"instances": inst, "mc_samples": 100}, reps
                )
            artifact = client.get(f"{base}/v1/models/{model_id}/artifact").content
            int8 = client.get(
                f"{base}/v1/models/{model_id}/artifact",
                params={"format": "tflite", "quantize": "int8"},
            ).content
    with tempfile.NamedTemporaryFile(suffix=".keras", delete=False) as fh:
        fh.write(artifact)
    for n_rows in rows:
        results[("loop100", n_rows)] = naive_loop(
            fh.name, X[:n_rows].astype("float32"), 100, 20 if n_rows == 1 else 5
        )
    os.unlink(fh.name)
    for n_rows in rows:
        results[("tflite-int8", n_rows)] = tflite_latency(
            int8, X[:n_rows].astype("float32"), args.requests if n_rows == 1 else 50
        )
    print(f"{'what':<38}{'p50 ms':>10}{'p99 ms':>10}")
    for (kind, n_rows), (p50, p99) in results.items():
        where = "HTTP" if kind in ("plain", "mc100") else "in-process"
        print(f"{kind + f' x {n_rows} rows ({where})':<38}{p50:>10.3f}{p99:>10.3f}")
    for n_rows in rows:
        speedup = results[("loop100", n_rows)][0] / results[("mc100", n_rows)][0]
        print(f"MC 100 x {n_rows} rows: {speedup:.1f}x faster than the loop (p50)")


if __name__ == "__main__":
    main()
