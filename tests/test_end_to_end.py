"""The whole path through real processes: `kts serve` and `kts worker`, over HTTP.

Once on the embedded default (SQLite, file-system broker, no server) and once as in
production (PostgreSQL and Redis on this machine, a prefork worker).
"""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import REDIS_URL

pytestmark = pytest.mark.slow

BN_MLP = {
    "name": "digits-bn-mlp",
    "dataset": {"builtin": "digits"},
    "epochs": 3,
    "seed": 42,
    "optimizer": {
        "type": "sgd",
        "learning_rate": 0.01,
        "momentum": 0.9,
        "nesterov": True,
        "clipnorm": 1.0,
    },
    "model": {
        "defaults": {"activation": "elu", "kernel_initializer": "he_normal"},
        "layers": [
            {"type": "flatten"},
            {"type": "batch_normalization"},
            {"type": "dense", "units": 64},
            {"type": "batch_normalization"},
            {"type": "dense", "units": 32},
            {"type": "dropout", "rate": 0.2},
            {
                "type": "dense",
                "units": 10,
                "activation": "softmax",
                "kernel_initializer": "glorot_uniform",
            },
        ],
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kts() -> str:
    return str(Path(sys.executable).parent / "kts")


@contextmanager
def processes(*commands: list[str], env: dict[str, str], log_dir: Path) -> Iterator[None]:
    procs = []
    try:
        for i, command in enumerate(commands):
            log = open(log_dir / f"proc{i}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
            )
        yield
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(base: str, log_dir: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in log_dir.glob("*.log"))
    raise AssertionError(f"server not ready:\n{logs}")


def read_events(base: str, job_id: str, timeout: float = 180) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((str(event), json.loads(line[6:])))
                if event == "done":
                    break
    return events


# A generous timeout: the first predict loads Keras in the API process, slow on a busy machine.
http = httpx.Client(timeout=120)


def full_flow(base: str) -> None:
    """Submit, follow events, poll, read the summary, download, predict with uncertainty."""
    check = http.post(f"{base}/v1/jobs/validate", json=BN_MLP)
    assert check.status_code == 200, check.text
    r = http.post(f"{base}/v1/jobs", json=BN_MLP, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    events = read_events(base, job_id)
    progress = [data for name, data in events if name == "progress"]
    assert [p["epoch"] for p in progress] == [1, 2, 3]
    assert all("loss" in p["metrics"] and "val_accuracy" in p["metrics"] for p in progress)
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded", events[-1]

    job = http.get(f"{base}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == {"epoch": 3, "epochs": 3}
    assert len(job["history"]["learning_rate"]) == 3
    model = http.get(f"{base}/v1/models/{job['model_id']}").json()
    planned, stored = check.json()["summary"], model["summary"]
    for key in ("total_params", "trainable_params", "non_trainable_params"):
        assert stored[key] == planned[key]
    assert [
        (x["name"], x["class_name"], x["output_shape"], x["params"]) for x in stored["layers"]
    ] == [(x["name"], x["class_name"], x["output_shape"], x["params"]) for x in planned["layers"]]
    assert model["base_model_id"] is None and model["uncertainty"]["mc_samples"] == 100
    workers = http.get(f"{base}/v1/workers").json()["items"]
    assert workers and all(w["devices"] and w["backend"] == model["backend"] for w in workers)
    assert job["engine"] in ("compiled", "fit")

    art = http.get(f"{base}/v1/models/{job['model_id']}/artifact")
    assert art.status_code == 200
    with zipfile.ZipFile(io.BytesIO(art.content)) as zf:
        assert "config.json" in zf.namelist()

    from sklearn.datasets import load_digits

    X = load_digits().data[:3].tolist()
    plain = http.post(f"{base}/v1/models/{job['model_id']}/predict", json={"instances": X}).json()
    assert plain["mc_samples"] == 0 and len(plain["predictions"]) == 3
    assert all(abs(sum(p) - 1) < 1e-4 for p in plain["predictions"])
    again = http.post(f"{base}/v1/models/{job['model_id']}/predict", json={"instances": X})
    assert again.json() == plain

    body = {"instances": X, "mc_samples": 100, "seed": 7}
    mc = http.post(f"{base}/v1/models/{job['model_id']}/predict", json=body).json()
    assert mc["mc_samples"] == 100 and mc["model_id"] == job["model_id"]
    first = mc["predictions"][0]
    assert set(first) == {
        "mean",
        "std",
        "class",
        "class_name",
        "predictive_entropy",
        "mutual_information",
    }
    assert len(first["mean"]) == 10 and max(first["std"]) > 0
    assert first["class"] == int(np.argmax(first["mean"]))
    assert 0 <= first["mutual_information"] <= first["predictive_entropy"]
    assert http.post(f"{base}/v1/models/{job['model_id']}/predict", json=body).json() == mc
    bad = http.post(
        f"{base}/v1/models/{job['model_id']}/predict",
        json={"instances": [[1, 2]], "mc_samples": 10},
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["loc"] == ["instances"]
    too_many = http.post(
        f"{base}/v1/models/{job['model_id']}/predict", json={"instances": X, "mc_samples": 10_001}
    )
    assert too_many.status_code == 422
    batch_scoring(base, job["model_id"])


def batch_scoring(base: str, model_id: str) -> None:
    """Upload a data set, score it with MC Dropout on the worker, read the results back."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    buf = io.BytesIO()
    np.savez(buf, X=digits.data[:500], y=digits.target[:500])
    ds = http.post(f"{base}/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()
    r = http.post(
        f"{base}/v1/models/{model_id}/batch-predictions",
        json={"dataset": {"id": ds["id"]}, "mc_samples": 20, "seed": 3},
    )
    assert r.status_code == 202, r.text
    url = f"{base}/v1/batch-predictions/{r.json()['id']}"
    deadline = time.monotonic() + 120
    while (state := http.get(url).json())["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    assert state["progress"] == {"rows_done": 500, "rows": 500}
    top = http.get(f"{url}/results", params={"sort": "-predictive_entropy", "limit": 5}).json()
    assert [p["row"] for p in top["predictions"]] == [
        u["row"] for u in state["summary"]["most_uncertain"][:5]
    ]
    csv_text = http.get(f"{url}/results", params={"format": "csv"}).text
    assert len(csv_text.strip().splitlines()) == 501


def test_embedded_default(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    command = [kts(), "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    with processes(command, env=env, log_dir=tmp_path):
        wait_ready(base, tmp_path)
        full_flow(base)
    assert (tmp_path / "data" / "kts.sqlite").exists()


@pytest.mark.postgres
def test_postgres_and_redis(tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env.update(
        KTS_DATABASE_URL=pg_url,
        KTS_BROKER_URL=REDIS_URL,
        KTS_QUEUE=f"kts-test-{uuid.uuid4().hex[:8]}",
        KTS_DATA_DIR=str(tmp_path / "data"),
    )
    migrated = subprocess.run([kts(), "migrate"], env=env, capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr
    with processes(
        [kts(), "serve", "--port", str(port)], [kts(), "worker"], env=env, log_dir=tmp_path
    ):
        wait_ready(base, tmp_path)
        full_flow(base)
