"""Prediction latency over HTTP (JAX backend): plain and MC Dropout, JSON and .npy bodies.

A throw-away `kts serve` (embedded, KTS_BACKEND=jax) trains a 784-300-100-10 MLP with dropout
in the top layers (Dense 300 relu, Dense 100 relu, Dropout 0.2, Dense 10 softmax; 1 epoch on
random 784-feature rows uploaded as .npz). An httpx keep-alive client then times each case
(after warm-up requests): plain 1 row, plain 256 rows, MC 1 row x 100 samples and MC 256 rows x
100 samples, each with a JSON body and with an application/x-npy body (options as query
parameters). Beside them, in this process: the naive MC loop (100 calls of
`model(x, training=True)` on the same .keras file, downloaded from the artifact route) for 1
and 256 rows, and the time to parse the 256-row JSON body alone (pydantic's
`model_validate_json` + float32 array, as the route does, against `orjson.loads` +
`np.asarray`). Figures are printed, never asserted. Usage:
python bench/predict_latency.py [--requests 200] [--loop-repeats 20] [--tflite] [--keep-log PATH]
"""

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_backends import (  # noqa: E402
    kts_serve,
    load_average,
    log_problems,
    machine,
    print_log_problems,
    wait_job,
)

MLP_LAYERS = [  # on 784 features: dropout in the top layers only
    {"type": "dense", "units": 300, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dense", "units": 100, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
# The earlier model of this script, on 28x28 rows with two dropout layers: bench/batch_predict.py
# imports it (its README figures were measured with it).
SPEC_LAYERS = [
    {"type": "flatten"},
    {"type": "dense", "units": 300, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 100, "activation": "relu", "kernel_initializer": "he_normal"},
    {"type": "dropout", "rate": 0.2},
    {"type": "dense", "units": 10, "activation": "softmax"},
]
NPY = "application/x-npy"
TARGETS = {  # p50 targets over HTTP, ms
    ("plain", 1): 1.5,
    ("mc100", 1): 2.0,
    ("mc100", 256): 30.0,
}


def random_rows(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N(0, 1) float32 rows of 784 features; labels from a fixed random linear map."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 784), dtype=np.float32)
    y = np.argmax(X @ rng.standard_normal((784, 10), dtype=np.float32), axis=1)
    return X, y.astype(np.int64)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def npy_bytes(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, X)
    return buf.getvalue()


def request_body(X: np.ndarray, mc: int, body: str) -> tuple[bytes, dict[str, str], dict[str, Any]]:
    """(content, headers, query params) for one request; encoded once, so never timed."""
    if body == "json":
        payload: dict[str, Any] = {"instances": X.tolist()}
        if mc:
            payload.update(mc_samples=mc, seed=1)
        return orjson.dumps(payload), {"content-type": "application/json"}, {}
    params = {"mc_samples": str(mc), "seed": "1"} if mc else {}
    return npy_bytes(X), {"content-type": NPY}, params


def http_latency(
    client: httpx.Client, url: str, X: np.ndarray, mc: int, body: str, n: int, warm: int
) -> tuple[tuple[float, float], Any]:
    content, headers, params = request_body(X, mc, body)
    first: Any = None
    for _ in range(warm):  # load, trace, compile this size's bucket
        r = client.post(url, content=content, headers=headers, params=params)
        assert r.status_code == 200, r.text[:500]
        first = first or r.json()
    assert len(first["predictions"]) == len(X), first
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.post(url, content=content, headers=headers, params=params)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text[:500]
    return percentiles(times), first


def http_floor(client: httpx.Client, url: str, n: int, warm: int) -> tuple[float, float]:
    """GET /healthz on the same server and client: what any request costs here."""
    for _ in range(warm):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(n):
        started = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200
    return percentiles(times)


def naive_loop(model_path: str, X: np.ndarray, n: int, repeats: int) -> tuple[float, float]:
    """100 eager calls of model(x, training=True), then the mean: what one writes by hand."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    keras.ops.convert_to_numpy(model(X, training=True))  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        draws = np.stack([keras.ops.convert_to_numpy(model(X, training=True)) for _ in range(n)])
        draws.mean(axis=0)
        times.append(time.perf_counter() - started)
    return percentiles(times)


def parse_share(content: bytes, repeats: int = 50) -> dict[str, float]:
    """Median ms to turn the 256-row JSON body into a float32 array, two ways; .npy beside."""
    from service.models.schemas import PredictRequest

    def pydantic_way() -> np.ndarray:
        request = PredictRequest.model_validate_json(content)
        return np.asarray(request.instances, dtype=np.float32)

    def orjson_way() -> np.ndarray:
        return np.asarray(orjson.loads(content)["instances"], dtype=np.float32)

    X = orjson_way()
    npy = npy_bytes(X)

    def npy_way() -> np.ndarray:
        return np.load(io.BytesIO(npy))

    out = {}
    for name, fn in (
        ("pydantic model_validate_json + np.asarray", pydantic_way),
        ("orjson.loads + np.asarray", orjson_way),
        (".npy body: np.load", npy_way),
    ):
        fn()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times) * 1000
    return out


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per case")
    parser.add_argument("--warm", type=int, default=10, help="untimed requests per case first")
    parser.add_argument("--loop-repeats", type=int, default=20, help="naive loop, 1 row")
    parser.add_argument("--tflite", action="store_true", help="also TFLite int8 in-process")
    parser.add_argument("--keep-log", default=None, help="copy the server log here")
    args = parser.parse_args()
    # the naive loop runs on the service's backend; set here, not at import (batch_predict.py
    # imports this module and keeps its own backend)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    load_start = load_average()
    print(f"load average at start (1, 5, 15 min): {load_start}")
    print(machine())
    X, y = random_rows(2000)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    sizes = (("plain", 1), ("plain", 256), ("mc100", 1), ("mc100", 256))
    cases = [(kind, n_rows, body) for kind, n_rows in sizes for body in ("json", "npy")]
    results: dict[tuple[str, int, str], tuple[float, float]] = {}
    int8 = b""
    # KERAS_BACKEND too: with KTS_BACKEND=jax alone every /predict answered 500 here
    # (inference/sampler.py imports Keras, on its default TensorFlow, before init_keras runs)
    serve_env = {"KTS_BACKEND": "jax", "KERAS_BACKEND": "jax"}
    with kts_serve(serve_env, args.keep_log) as (base, log_path):
        r = httpx.post(
            f"{base}/v1/datasets", files={"file": ("r.npz", buf.getvalue())}, timeout=120
        )
        r.raise_for_status()
        spec = {
            "dataset": {"id": r.json()["id"]},
            "epochs": 1,
            "seed": 1,
            "model": {"normalize_inputs": False, "layers": MLP_LAYERS},
        }
        r = httpx.post(f"{base}/v1/jobs", json=spec, timeout=60)
        r.raise_for_status()
        job = wait_job(base, r.json()["id"], poll=0.1)
        assert job["status"] == "succeeded", job
        model_id = job["model_id"]
        print(f"model {model_id}: trained 1 epoch, engine {job['engine']}", flush=True)
        url = f"{base}/v1/models/{model_id}/predict"
        with httpx.Client(timeout=120) as client:
            floor = http_floor(client, f"{base}/healthz", args.requests, args.warm)
            for kind, n_rows, body in cases:
                mc = 100 if kind == "mc100" else 0
                (p50, p99), answer = http_latency(
                    client, url, X[:n_rows], mc, body, args.requests, args.warm
                )
                results[(kind, n_rows, body)] = (p50, p99)
                print(f"  {kind} x {n_rows} rows, {body}: p50 {p50:.3f} ms", flush=True)
            artifact = client.get(f"{base}/v1/models/{model_id}/artifact").content
            if args.tflite:
                int8 = client.get(
                    f"{base}/v1/models/{model_id}/artifact",
                    params={"format": "tflite", "quantize": "int8"},
                    timeout=300,
                ).content
        problems = log_problems(log_path)
    with tempfile.TemporaryDirectory(prefix="kts-predict-") as tmp:
        path = str(Path(tmp) / "model.keras")
        Path(path).write_bytes(artifact)
        loop = {
            1: naive_loop(path, X[:1], 100, args.loop_repeats),
            256: naive_loop(path, X[:256], 100, max(5, args.loop_repeats // 4)),
        }
    tflite = {n: tflite_latency(int8, X[:n], args.requests) for n in (1, 256)} if int8 else {}
    parse = parse_share(request_body(X[:256], 100, "json")[0])
    load_end = load_average()

    import keras

    print()
    print(f"{'what':<40}{'p50 ms':>10}{'p99 ms':>10}  target (p50)")
    for (kind, n_rows, body), (p50, p99) in results.items():
        target = TARGETS.get((kind, n_rows))
        verdict = ""
        if target is not None:
            verdict = f"<= {target} ms: {'met' if p50 <= target else 'not met'}"
        name = f"{kind} x {n_rows} rows, HTTP {body}"
        print(f"{name:<40}{p50:>10.3f}{p99:>10.3f}  {verdict}")
    print(f"{'floor: GET /healthz (HTTP)':<40}{floor[0]:>10.3f}{floor[1]:>10.3f}")
    for n_rows, (p50, p99) in loop.items():
        name = f"naive loop 100 x {n_rows} rows ({keras.backend.backend()})"
        print(f"{name:<40}{p50:>10.3f}{p99:>10.3f}")
    for n_rows, (p50, p99) in tflite.items():
        print(f"{f'TFLite int8 x {n_rows} rows (in-process)':<40}{p50:>10.3f}{p99:>10.3f}")
    print()
    for n_rows in (1, 256):
        for body in ("json", "npy"):
            speedup = loop[n_rows][0] / results[("mc100", n_rows, body)][0]
            print(f"MC 100 x {n_rows} rows, HTTP {body}: {speedup:.1f}x faster than the loop (p50)")
    size = len(request_body(X[:256], 100, "json")[0])
    print(f"parsing the 256-row JSON body alone ({size:,} bytes), median ms:")
    for name, ms in parse.items():
        print(f"    {name:<45}{ms:>8.3f}")
    print(f"requests per case: {args.requests} timed after {args.warm} warm-up")
    print(f"load average at end (1, 5, 15 min): {load_end}")
    print_log_problems(*problems)


if __name__ == "__main__":
    main()
