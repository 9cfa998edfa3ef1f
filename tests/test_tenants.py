"""Who may see what: another tenant's data sets, jobs and models do not exist for you."""

import io
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.db import make_engine, make_session_factory
from service.settings import Settings
from tests.conftest import make_spec
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def test_keys_are_required_and_stored_hashed(secured: Any, settings: Settings) -> None:
    client, alice, _ = secured
    assert client.get("/healthz").status_code == 200  # probes need no key
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}):
        r = client.get("/v1/jobs", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/jobs", headers=alice).status_code == 200
    from sqlalchemy import select

    from service.rows import ApiKey

    with client.app.state.session_factory() as session:
        stored = [row.key_hash for row in session.scalars(select(ApiKey))]
    key = alice["Authorization"].split()[1]
    assert key not in stored and all(len(h) == 64 for h in stored)


def test_every_route_hides_other_tenants(secured: Any, ctx: WorkerContext) -> None:
    client, alice, bob = secured
    buf = io.BytesIO()
    np.savez(buf, X=np.random.rand(60, 64).astype("float32"), y=np.arange(60) % 10)
    ds = client.post("/v1/datasets", files={"file": ("a.npz", buf.getvalue())}, headers=alice)
    assert ds.status_code == 201
    ds_id = ds.json()["id"]
    job = client.post("/v1/jobs", json=make_spec(epochs=1), headers=alice).json()
    assert run_job(ctx, job["id"]) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job['id']}", headers=alice).json()["model_id"]

    hidden = [
        ("GET", f"/v1/datasets/{ds_id}", None),
        ("GET", f"/v1/jobs/{job['id']}", None),
        ("GET", f"/v1/jobs/{job['id']}/events", None),
        ("GET", f"/v1/jobs/{job['id']}/diagnostics", None),
        ("POST", f"/v1/jobs/{job['id']}/cancel", None),
        ("GET", f"/v1/models/{model_id}", None),
        ("GET", f"/v1/models/{model_id}/artifact", None),
        ("POST", f"/v1/models/{model_id}/predict", {"instances": [[0.0] * 64]}),
        ("POST", f"/v1/models/{model_id}/optimize", {"weights": "int8"}),
    ]
    for method, path, body in hidden:
        r = client.request(method, path, json=body, headers=bob)
        assert r.status_code == 404, (path, r.status_code)
        assert client.request(method, path, json=body, headers=alice).status_code != 404, path
    for path in ("/v1/datasets", "/v1/jobs"):
        assert client.get(path, headers=bob).json()["items"] == []
        assert len(client.get(path, headers=alice).json()["items"]) >= 1
    # someone else's data set or base model inside a spec is a 422 at its loc
    r = client.post("/v1/jobs", json=make_spec(dataset={"id": ds_id}), headers=bob)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["dataset", "id"]
    r = client.post(
        "/v1/jobs/validate",
        headers=bob,
        json=make_spec(
            base_model={"model_id": model_id},
            model={"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]},
        ),
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["base_model", "model_id"]


def test_idempotency_keys_are_per_tenant(secured: Any) -> None:
    client, alice, bob = secured
    a = client.post("/v1/jobs", json=make_spec(), headers={**alice, "Idempotency-Key": "k"})
    b = client.post("/v1/jobs", json=make_spec(epochs=5), headers={**bob, "Idempotency-Key": "k"})
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


def test_kts_keys_create_prints_a_working_key(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "KTS_DATA_DIR": str(tmp_path)}
    kts = str(Path(sys.executable).parent / "kts")
    out = subprocess.run(
        [kts, "keys", "create", "--tenant", "carol"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("kts_")
    app = create_app(Settings(data_dir=tmp_path, require_auth=True))  # type: ignore[arg-type]
    with TestClient(app) as client:
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listed = subprocess.run([kts, "keys", "list"], env=env, capture_output=True, text=True)
    assert "carol" in listed.stdout and key not in listed.stdout


def test_serving_off_loopback_without_keys_is_refused(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "KTS_DATA_DIR": str(tmp_path),
        "KTS_REQUIRE_AUTH": "false",
        "KTS_BROKER_URL": "redis://127.0.0.1:6379/15",
    }
    kts = str(Path(sys.executable).parent / "kts")
    out = subprocess.run(
        [kts, "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "without API keys" in out.stderr


@pytest.mark.parametrize("name", ["A:x", "", "-lead", "UPPER", "a" * 65, "tab\tname"])
def test_tenant_names_are_validated(settings: Settings, name: str) -> None:
    from service.auth import TenantInvalid

    engine = make_engine(settings.resolved_database_url())
    with make_session_factory(engine)() as session, pytest.raises(TenantInvalid):
        create_key(session, name)
