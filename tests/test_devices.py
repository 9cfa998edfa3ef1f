"""One job across several devices (resources.devices): Keras's distribution API, data parallel
under JAX. XLA is made to expose 4 host devices, which must happen before JAX is imported,
so the jobs run in a subprocess; it prints what it saw as JSON and the asserts are here.

Tolerance: per-epoch losses of the 4-device job equal the 1-device job's within 1e-5
relative (measured here: within 2e-7; only the order of the float sums differs).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_spec

RTOL = 1e-5

SCRIPT = textwrap.dedent("""
    import io, json, sys, threading, time
    import numpy as np
    from fastapi.testclient import TestClient
    from service.app import create_app
    from service.db import upgrade_database
    from service.settings import Settings
    from worker.context import worker_context
    from worker.jobs.lease import request_release
    from worker.jobs.lifecycle import run_job

    settings = Settings()
    upgrade_database(settings.resolved_database_url())
    specs = json.loads(sys.argv[1])
    out = {}
    with TestClient(create_app(settings)) as client:
        rng = np.random.default_rng(0)  # 400 rows: 320 train, 80 validation, all split by 4
        X = rng.normal(size=(400, 8)).astype("float32")
        y = (X[:, :4].sum(axis=1) > X[:, 4:].sum(axis=1)).astype("int64")
        buf = io.BytesIO()
        np.savez(buf, X=X, y=y)
        ds = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()["id"]

        def submit(spec):
            r = client.post("/v1/jobs", json={**spec, "dataset": {"id": ds}})
            assert r.status_code == 202, r.text
            return r.json()["id"]

        def read(job_id):
            return client.get(f"/v1/jobs/{job_id}").json()

        ctx = worker_context()
        import keras
        out["devices"] = len(keras.distribution.list_devices())
        for name in ("one", "four"):
            job_id = submit(specs[name])
            out[name + "_outcome"] = run_job(ctx, job_id, "node/1")
            out[name] = read(job_id)

        job_id = submit(specs["resume"])  # stopped (handed back) mid-way, then resumed
        first = []
        thread = threading.Thread(target=lambda: first.append(run_job(ctx, job_id, "node/2")))
        thread.start()
        while read(job_id)["progress"]["epoch"] < 2:
            time.sleep(0.05)
        request_release(ctx, "node")
        thread.join()
        out["released"] = first
        out["checkpointed"] = read(job_id)
        out["resume_outcome"] = run_job(ctx, job_id, "node/3")
        out["resumed"] = read(job_id)
        model = out["resumed"]["model_id"]
        r = client.post(f"/v1/models/{model}/predict", json={"instances": X[:3].tolist()})
        out["predict_status"] = r.status_code
    print("RESULT " + json.dumps(out))
""")


def _spec(**overrides: Any) -> dict[str, Any]:
    layers = [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "batch_normalization"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 2, "activation": "softmax"},
    ]
    return make_spec(
        model={"layers": layers}, validation_split=0.2, batch_size=32, seed=3, **overrides
    )


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    specs = {
        "one": _spec(epochs=4, engine="fit"),
        # compiled was asked: a 4-device job falls back to fit, and says so
        "four": _spec(epochs=4, engine="compiled", resources={"devices": 4}),
        "resume": _spec(epochs=12, resources={"accelerator": "cpu", "devices": 4}),
    }
    data = tmp_path_factory.mktemp("devices") / "data"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KTS_")},
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "KTS_BACKEND": "jax",
        "KERAS_BACKEND": "jax",
        "KTS_DATA_DIR": str(data),
        "KTS_REQUIRE_AUTH": "false",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(specs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return dict(json.loads(line.removeprefix("RESULT ")))


def test_four_devices_train_what_one_device_trains(seen: dict[str, Any]) -> None:
    assert seen["devices"] == 4
    assert seen["one_outcome"] == seen["four_outcome"] == "succeeded"
    one, four = seen["one"], seen["four"]
    assert four["resources"] == {"accelerator": "any", "devices": 4}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(one["history"][key]) == len(four["history"][key]) == 4
        assert four["history"][key] == pytest.approx(one["history"][key], rel=RTOL), key


def test_a_multi_device_job_trains_with_fit_and_says_why(seen: dict[str, Any]) -> None:
    four = seen["four"]
    assert four["engine"] == "fit"
    assert [w["code"] for w in four["warnings"]] == ["engine_fallback"]
    assert "4 devices" in four["warnings"][0]["message"]
    assert seen["one"]["engine"] == "fit" and seen["one"]["warnings"] == []


def test_a_multi_device_job_checkpoints_and_resumes(seen: dict[str, Any]) -> None:
    assert seen["released"] == ["released"]
    assert seen["checkpointed"]["status"] == "queued"
    assert seen["resume_outcome"] == "succeeded"
    done = seen["resumed"]
    assert done["status"] == "succeeded" and done["resumed_from_epoch"] >= 2
    assert len(done["history"]["loss"]) == 12
    assert all(v is not None and v == v for v in done["history"]["loss"])  # finite, no NaN
    assert seen["predict_status"] == 200
