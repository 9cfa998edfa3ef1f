"""Health probes while the API runs at its limits: a throw-away `kts serve` (embedded worker)
trains a digits MLP with dropout, then C clients each send maximum-size MC predictions
(500 rows x 10,000 samples x 10 classes = KTS_MAX_MC_VALUES, 50 M values) while a probe
asks /healthz and /readyz every 50 ms. Prints the probes' p50/p99/max with the load on, beside
the same probes with no load, in one run. Figures only, never asserted.

    python bench/health_under_load.py [--clients 50] [--seconds 20] [--url URL]
"""

import argparse
import os
import statistics
import sys
import threading
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from service_proc import running_service, wait_job  # noqa: E402

SPEC = {
    "dataset": {"builtin": "digits"},
    "model": {
        "normalize_inputs": True,
        "layers": [
            {"type": "dense", "units": 64, "activation": "relu"},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    },
    "epochs": 1,
}


def probe(base: str, seconds: float) -> list[float]:
    """Latencies (ms) of /healthz and /readyz, one probe every 50 ms."""
    times: list[float] = []
    with httpx.Client(timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for path in ("/healthz", "/readyz"):
                started = time.perf_counter()
                client.get(base + path)
                times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    return times


def load(base: str, model_id: str, stop: threading.Event, done: list[int]) -> None:
    rows = np.random.default_rng(0).uniform(0, 16, size=(500, 64)).round(2).tolist()
    body = {"instances": rows, "mc_samples": 10_000}
    with httpx.Client(timeout=600) as client:
        while not stop.is_set():
            r = client.post(f"{base}/v1/models/{model_id}/predict", json=body)
            done.append(r.status_code)


def figures(label: str, times: list[float]) -> None:
    q = statistics.quantiles(times, n=100)
    print(
        f"{label:>22}: n={len(times):4d}  p50 {q[49]:7.1f} ms  p99 {q[98]:7.1f} ms  "
        f"max {max(times):7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--url")
    args = parser.parse_args()
    with running_service(args.url) as base:
        job = httpx.post(f"{base}/v1/jobs", json=SPEC, timeout=60).json()
        model_id = wait_job(base, job["id"])["model_id"]
        figures("no load", probe(base, args.seconds / 2))
        stop, done = threading.Event(), []
        clients = [
            threading.Thread(target=load, args=(base, model_id, stop, done), daemon=True)
            for _ in range(args.clients)
        ]
        for t in clients:
            t.start()
        time.sleep(2)  # let every client have a request in flight
        figures(f"{args.clients} max predicts", probe(base, args.seconds))
        stop.set()
        codes = {c: done.count(c) for c in set(done)}
        print(f"predict answers during the probe: {codes}")


if __name__ == "__main__":
    main()
