"""Per-tenant quotas: queued or running jobs (429 with Retry-After; idempotent retries pass),
stored data-set bytes (413), predict requests per second (429); other tenants are unaffected,
and a quota frees as jobs end or data sets are deleted."""

import io
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.db import upgrade_database
from tests.conftest import make_spec, sqlite_settings


def _client(tmp_path: Path, **limits: Any) -> tuple[TestClient, dict[str, str], dict[str, str]]:
    limits = {"max_active_jobs_per_tenant": 2, **limits}
    settings = sqlite_settings(tmp_path, require_auth=True, **limits)
    upgrade_database(settings.resolved_database_url())
    app = create_app(settings)
    with app.state.session_factory() as session:
        a, b = create_key(session, "team-a"), create_key(session, "team-b")
        session.commit()
    return TestClient(app), {"Authorization": f"Bearer {a}"}, {"Authorization": f"Bearer {b}"}


def test_a_tenant_past_its_quota_gets_429(tmp_path: Path) -> None:
    client, a, b = _client(tmp_path)
    with client:
        first = client.post("/v1/jobs", json=make_spec(), headers=a | {"Idempotency-Key": "k1"})
        assert first.status_code == 202
        assert client.post("/v1/jobs", json=make_spec(epochs=2), headers=a).status_code == 202
        r = client.post("/v1/jobs", json=make_spec(epochs=3), headers=a)
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"] == "30"
        assert r.json()["error"]["code"] == "quota_exceeded"
        assert "KTS_MAX_ACTIVE_JOBS_PER_TENANT" in r.json()["error"]["message"]
        # a retry of an accepted submission adds no job: it still answers with that job
        again = client.post("/v1/jobs", json=make_spec(), headers=a | {"Idempotency-Key": "k1"})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert client.post("/v1/jobs", json=make_spec(), headers=b).status_code == 202
        # cancelling one frees a place
        assert client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=a).status_code == 202
        assert client.post("/v1/jobs", json=make_spec(epochs=3), headers=a).status_code == 202
        listed = client.get("/v1/jobs", headers=a).json()["items"]
        assert len(listed) == 3  # the refused submission stored nothing


def _upload(client: TestClient, headers: dict[str, str], rows: int) -> "object":
    buf = io.BytesIO()
    np.savez(buf, X=np.ones((rows, 10), np.float32), y=np.arange(rows) % 2)
    return client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}, headers=headers)


def test_uploads_past_the_storage_quota_are_413_and_store_nothing(tmp_path: Path) -> None:
    # 48 bytes a row (10 float32 features and an 8-byte label): 100 rows are 4,800 bytes
    client, a, b = _client(tmp_path, max_stored_bytes_per_tenant=10_000)
    with client:
        assert _upload(client, a, 100).status_code == 201
        assert _upload(client, a, 100).status_code == 201
        r = _upload(client, a, 100)
        assert r.status_code == 413 and r.json()["error"]["code"] == "quota_exceeded"
        assert "KTS_MAX_STORED_BYTES_PER_TENANT" in r.json()["error"]["message"]
        assert len(client.get("/v1/datasets", headers=a).json()["items"]) == 2
        assert _upload(client, b, 100).status_code == 201  # another tenant has its own
        first = client.get("/v1/datasets", headers=a).json()["items"][0]["id"]
        assert client.delete(f"/v1/datasets/{first}", headers=a).status_code == 204
        assert _upload(client, a, 100).status_code == 201  # deleting frees the space


def test_predict_requests_past_the_rate_are_429(tmp_path: Path) -> None:
    client, a, b = _client(tmp_path, predict_rate_per_tenant=2.0)  # bursts of 4
    with client:
        answers = [
            client.post("/v1/models/unknown/predict", json={"instances": [[1.0]]}, headers=a)
            for _ in range(6)
        ]
        statuses = [r.status_code for r in answers]
        assert statuses[:4] == [404] * 4 and 429 in statuses[4:], statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "quota_exceeded"
        other = client.post("/v1/models/unknown/predict", json={"instances": [[1.0]]}, headers=b)
        assert other.status_code == 404  # the other tenant's bucket is full
        v2 = client.post("/v2/models/unknown/infer", json={"inputs": []}, headers=a)
        assert v2.status_code == 429  # the serving formats share the bucket
