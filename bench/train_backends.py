"""Seconds per epoch of the chapter's batch-norm MLP: raw Keras fit (TF, JAX) against the service.

One invocation, measured one after another (never concurrently):
  a. raw Keras `fit` under TensorFlow (a child process with KERAS_BACKEND=tensorflow);
  b. raw Keras `fit` under JAX (a child process with KERAS_BACKEND=jax);
  c. the embedded service (`kts serve`, SQLite + file broker + embedded worker, KTS_BACKEND=jax),
     the same data uploaded as .npz, a 1-epoch warm-up job, then the same model as a spec: once
     with the default engine (compiled under JAX) and once with `"engine": "fit"`.
The model: Flatten 28x28, BN, Dense 300 ELU he_normal, BN, Dense 100 ELU he_normal, BN,
Dense 10 softmax; Nadam (1e-3), sparse categorical crossentropy, accuracy; batch 32; no
validation rows (validation_split 0 in the spec). Data: random N(0, 1) float32 rows whose label
is the argmax of a fixed random linear map, so the loss falls. Seconds per epoch are the median
of the epochs after the first (which includes tracing and compilation). Figures are printed,
never asserted. Usage:
python bench/train_backends.py [--epochs 3] [--rows 60000] [--keep-log PATH]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

LAYERS = [
    {"type": "flatten"},
    {"type": "batch_normalization"},
    {"type": "dense", "units": 300, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "batch_normalization"},
    {"type": "dense", "units": 100, "activation": "elu", "kernel_initializer": "he_normal"},
    {"type": "batch_normalization"},
    {"type": "dense", "units": 10, "activation": "softmax"},
]


# ---------------------------------------------------------------- shared with predict_latency.py


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages from /proc/loadavg."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    """nproc, the CPU model and the devices JAX sees (imports jax in this process)."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import jax

    return f"nproc {os.cpu_count()}, CPU {model!r}, jax {jax.__version__} devices {jax.devices()}"


@contextmanager
def kts_serve(env_extra: dict[str, str], keep_log: str | None = None) -> Iterator[tuple[str, Path]]:
    """A throw-away embedded `kts serve` with these KTS_ settings; yields (base URL, log path).

    Like service_proc.running_service, but it passes settings (that one drops every KTS_
    variable), fails when the server never gets ready, and keeps the log for a look afterwards.
    Started as `python -m service.cli serve`, which is what `kts serve` runs.
    """
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="kts-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
        env.pop("KERAS_BACKEND", None)  # KTS_BACKEND decides
        env.update(env_extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        log_path = Path(tmp) / "serve.log"
        log = open(log_path, "wb")  # noqa: SIM115
        data_dir = Path(tmp) / "data"
        proc = subprocess.Popen(
            # `kts serve` hands these flags to service.cli unchanged; run it directly, so that
            # the client half of `kts` (kts_client.cli) is not needed to start the server
            [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(data_dir)]
            + ["--port", str(port), "--loglevel", "WARNING"],
            env=env,
            cwd=tmp,  # anything written to the working directory goes with the temp folder
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError("kts serve did not get ready in time")
            if proc.poll() is not None:
                raise RuntimeError(f"kts serve exited: {log_path.read_text()[-3000:]}")
            yield base, log_path
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
            if keep_log:
                shutil.copyfile(log_path, keep_log)


BENIGN = (  # start-up and shutdown lines of every embedded `kts serve` here
    "no API keys required",
    "SecurityWarning",
    "_warn_or_raise_security_error",
    "No hostname was supplied",
    "absl::InitializeLog",
    "oneDNN custom operations",
    "running job(s) asked to checkpoint and hand back",
)


def log_problems(log_path: Path) -> tuple[list[str], int]:
    """Lines of the server log that look like trouble, and how many benign ones were skipped."""
    words = ("error", "traceback", "exception", "critical", "warning")
    lines = log_path.read_text(errors="replace").splitlines()
    flagged = [line for line in lines if any(w in line.lower() for w in words)]
    problems = [line for line in flagged if not any(b in line for b in BENIGN)]
    return problems, len(flagged) - len(problems)


def print_log_problems(problems: list[str], benign: int) -> None:
    print(
        f"server log: {len(problems)} line(s) with error/traceback/exception/warning "
        f"({benign} known start-up/shutdown warning line(s) not counted)"
    )
    for line in problems[:30]:
        print(f"    {line[:300]}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def embedded_worker_pid(log_path: Path) -> int | None:
    """The embedded worker's pid, as `kts serve` logs it at start."""
    match = re.search(
        r"embedded worker started \(pid (\d+)\)", log_path.read_text(errors="replace")
    )
    return int(match.group(1)) if match else None


def wait_job(base: str, job_id: str, poll: float) -> dict[str, Any]:
    import httpx

    while True:
        job: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)


# ---------------------------------------------------------------- data and the raw runs


def linear_rule_data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N(0, 1) float32 rows of 28x28; the label is the argmax of a fixed random linear map."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, 28, 28), dtype=np.float32)
    W = rng.standard_normal((28 * 28, 10), dtype=np.float32)
    y = np.argmax(X.reshape(rows, -1) @ W, axis=1).astype(np.int64)
    return X, y


def after_first(values: list[float]) -> float:
    return statistics.median(values[1:] or values)


def raw_fit(data_path: str, epochs: int) -> dict[str, Any]:
    """Keras fit in this process under KERAS_BACKEND; seconds of each epoch and its loss."""
    import keras
    from train_overhead import batch_norm_mlp  # bench/ is on the path

    class EpochTimer(keras.callbacks.Callback):
        """Each epoch from its begin to its end with the loss back on the host."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.losses: list[float] = []
            self.cpu_seconds: list[float] = []
            self.started = (0.0, 0.0)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.losses.append(float((logs or {})["loss"]))  # waits for the last step
            self.seconds.append(time.perf_counter() - self.started[0])
            self.cpu_seconds.append(time.process_time() - self.started[1])

    with np.load(data_path) as data:
        X, y = data["X"], data["y"]
    model = batch_norm_mlp()  # the chapter's net, as every training bench builds it
    timer = EpochTimer()
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(X, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[timer])
    return {
        "backend": keras.backend.backend(),
        "seconds": timer.seconds,
        "losses": timer.losses,
        "fit_seconds": time.perf_counter() - started,
        "fit_cpu_seconds": time.process_time() - cpu_started,
        "cpu_seconds": timer.cpu_seconds,
    }


def run_raw(backend: str, data_path: str, epochs: int) -> dict[str, Any]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--raw", data_path, "--epochs", str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"raw fit under {backend} failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result["process_seconds"] = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- the service


def run_service(
    data_path: str, epochs: int, keep_log: str | None
) -> tuple[list[dict[str, Any]], tuple[list[str], int]]:
    import httpx

    spec_base: dict[str, Any] = {
        "validation_split": 0,
        "seed": 1,
        "model": {"normalize_inputs": False, "layers": LAYERS},
        "optimizer": {"type": "nadam", "learning_rate": 0.001},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "batch_size": 32,
        "epochs": epochs,
    }
    results = []
    with kts_serve({"KTS_BACKEND": "jax"}, keep_log) as (base, log_path):
        with open(data_path, "rb") as fh:
            r = httpx.post(f"{base}/v1/datasets", files={"file": ("linear.npz", fh)}, timeout=600)
        r.raise_for_status()
        spec_base["dataset"] = {"id": r.json()["id"]}
        warm = httpx.post(f"{base}/v1/jobs", json={**spec_base, "epochs": 1}, timeout=60)
        warm.raise_for_status()
        job = wait_job(base, warm.json()["id"], poll=0.25)
        print(f"  warm-up job: {job['status']}, engine {job['engine']}", flush=True)
        worker = embedded_worker_pid(log_path)
        for label, extra in (
            ("service, engine auto", {}),
            ("service, engine fit", {"engine": "fit"}),
        ):
            cpu = process_cpu_seconds(worker) if worker else float("nan")
            started = time.perf_counter()
            r = httpx.post(f"{base}/v1/jobs", json={**spec_base, **extra}, timeout=60)
            r.raise_for_status()
            job = wait_job(base, r.json()["id"], poll=0.2)
            wall = time.perf_counter() - started
            cpu = process_cpu_seconds(worker) - cpu if worker else float("nan")
            results.append({"label": label, "job": job, "wall": wall, "cpu": cpu})
            print(f"  {label}: {job['status']}, engine {job['engine']}, {wall:.2f} s", flush=True)
        problems = log_problems(log_path)
    return results, problems


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="the first is the warm-up")
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--keep-log", default=None, help="copy the server log here")
    parser.add_argument("--raw", default=None, help=argparse.SUPPRESS)  # child: data path
    args = parser.parse_args()
    if args.raw:
        print("RESULT " + json.dumps(raw_fit(args.raw, args.epochs)), flush=True)
        return

    load_start = load_average()
    print(f"load average at start (1, 5, 15 min): {load_start}")
    print(machine())
    print(f"{args.rows} rows 28x28 float32, batch 32, {args.epochs} epochs (first is warm-up)")
    X, y = linear_rule_data(args.rows)
    with tempfile.TemporaryDirectory(prefix="kts-train-backends-") as tmp:
        data_path = str(Path(tmp) / "linear.npz")
        np.savez(data_path, X=X, y=y)
        del X, y
        rows: list[dict[str, Any]] = []
        for backend in ("tensorflow", "jax"):
            print(f"raw Keras fit under {backend} ...", flush=True)
            raw = run_raw(backend, data_path, args.epochs)
            rows.append(
                {
                    "what": f"raw Keras fit, {raw['backend']}",
                    "engine": "fit",
                    "seconds": raw["seconds"],
                    "loss": raw["losses"][-1],
                    "cpu_epochs": raw["cpu_seconds"],
                    "wall": raw["fit_seconds"],
                    "cpu": raw["fit_cpu_seconds"],
                    "wall_note": "fit call",
                }
            )
        print("service (kts serve, KTS_BACKEND=jax) ...", flush=True)
        service, problems = run_service(data_path, args.epochs, args.keep_log)
    for item in service:
        job = item["job"]
        history = job.get("history") or {}
        rows.append(
            {
                "what": item["label"],
                "engine": job.get("engine"),
                "seconds": [s for s in history.get("epoch_seconds", []) if s is not None],
                "loss": (history.get("loss") or [float("nan")])[-1],
                "cpu_epochs": [],
                "wall": item["wall"],
                "cpu": item["cpu"],
                "wall_note": "submit -> " + job["status"],
                "status": job["status"],
                "error": job.get("error"),
            }
        )
    load_end = load_average()

    print()
    print(
        f"{'what':<27}{'engine':<10}{'s/epoch':>9}  {'epochs (s)':<26}{'final loss':>11}"
        f"{'cpu s/ep':>10}{'wall s':>9}{'cpu s':>9}  wall and cpu s are"
    )
    for row in rows:
        per = after_first(row["seconds"]) if row["seconds"] else float("nan")
        cpu_per = after_first(row["cpu_epochs"]) if row["cpu_epochs"] else float("nan")
        epochs = ", ".join(f"{s:.3f}" for s in row["seconds"])
        print(
            f"{row['what']:<27}{row['engine'] or '-':<10}{per:>9.3f}  {epochs:<26}"
            f"{row['loss']:>11.4f}{cpu_per:>10.3f}{row['wall']:>9.2f}{row['cpu']:>9.2f}  "
            f"{row['wall_note']}"
        )
        if row.get("error"):
            print(f"    job error: {row['error']}")
    print(
        "s/epoch: median of the epochs after the first (wall); cpu s/ep: the same in CPU "
        "seconds of the process (raw runs only); cpu s: CPU seconds of the fit call, or of the "
        "embedded worker process from submit to the end of the job"
    )
    per_epoch = {
        r["what"]: after_first(r["seconds"]) if r["seconds"] else float("nan") for r in rows
    }
    tf_s = per_epoch["raw Keras fit, tensorflow"]
    jax_s = per_epoch["raw Keras fit, jax"]
    print()
    for label in ("service, engine auto", "service, engine fit"):
        s = per_epoch[label]
        print(
            f"{label}: s/epoch over raw TF fit {s / tf_s:.3f} (target <= 0.25), "
            f"over raw JAX fit {s / jax_s:.3f} (target <= 0.8)"
        )
    print(f"load average at end (1, 5, 15 min): {load_end}")
    print_log_problems(*problems)


if __name__ == "__main__":
    main()
