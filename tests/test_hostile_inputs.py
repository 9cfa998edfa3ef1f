"""Hostile requests inside the limits answer 4xx with the error shape (or work), never 500,
and what was stored before is unchanged."""

import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.datasets.arrays import load_builtin, npy_header
from service.db import upgrade_database
from tests.conftest import make_spec, sqlite_settings, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload(client: TestClient, name: str, data: bytes, **form: str) -> "object":
    return client.post("/v1/datasets", files={"file": (name, data)}, data=form)


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/datasets", "/v1/models"])
@pytest.mark.parametrize("digits", [19, 60])
def test_cursor_with_a_huge_integer_is_422(client: TestClient, route: str, digits: int) -> None:
    cursor = base64.urlsafe_b64encode(b"9" * digits).decode()
    r = client.get(route, params={"cursor": cursor})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["cursor"]


@pytest.mark.parametrize(
    ("name", "data", "form"),
    [
        ("big.npz", _npz(X=np.zeros((4, 2)), y=np.array([0, 1, 2**63, 2], np.uint64)), {}),
        ("wide.npz", _npz(X=np.zeros((4, 2)), y=np.array([0, 1, 10**9, 2])), {}),
        ("empty.npz", _npz(X=np.zeros((4, 0)), y=np.array([0, 1, 0, 1])), {}),
        ("complex.npz", _npz(X=np.zeros((4, 2), np.complex64), y=np.arange(4)), {}),
        ("td.npz", _npz(X=np.zeros((4, 2), "m8[s]"), y=np.arange(4)), {}),
        ("only_target.csv", b"label\n0\n1\n0\n1\n", {"target": "label"}),
        ("huge_field.csv", b"a,label\n" + b"1" * 1_000_000 + b",0\n2,1\n", {"target": "label"}),
        ("bad_quote.csv", b'a,label\n"1\r2,0\n3,1\n', {"target": "label"}),
    ],
)
def test_bad_uploads_are_422(client: TestClient, name: str, data: bytes, form: dict) -> None:
    r = _upload(client, name, data, **form)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["loc"] in (["file"], ["target"])


def test_fortran_ordered_upload_is_stored_c_ordered(client: TestClient, ctx: WorkerContext) -> None:
    X = np.asfortranarray(load_builtin("digits").X[:200])
    r = _upload(client, "f.npz", _npz(X=X, y=load_builtin("digits").y[:200]))
    assert r.status_code == 201, r.text
    key = f"datasets/{r.json()['id']}/X.npy"
    with open(ctx.store.path(key), "rb") as fh:
        shape, fortran, _ = npy_header(fh)
    assert shape == (200, 64) and not fortran


def test_batch_results_sorted_by_a_list_column_is_422(
    client: TestClient, ctx: WorkerContext
) -> None:
    job_id = submit(client, make_spec(epochs=1))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    data = _npz(X=load_builtin("digits").X[:50], y=load_builtin("digits").y[:50])
    dataset = _upload(client, "d.npz", data).json()["id"]
    batch = client.post(
        f"/v1/models/{model_id}/batch-predictions",
        json={"dataset": {"id": dataset}, "mc_samples": 5},
    ).json()
    assert run_job(ctx, batch["id"]) == "succeeded"
    url = f"/v1/batch-predictions/{batch['id']}/results"
    for sort in ("-mean", "std", "mean"):
        r = client.get(url, params={"sort": sort})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["sort"]
    ranked = client.get(url, params={"sort": "-predictive_entropy"}).json()["predictions"]
    entropies = [p["predictive_entropy"] for p in ranked]
    assert entropies == sorted(entropies, reverse=True)


def test_a_failed_job_error_names_no_server_path(client: TestClient, ctx: WorkerContext) -> None:
    data = _npz(X=load_builtin("digits").X, y=load_builtin("digits").y)
    dataset = _upload(client, "d.npz", data).json()["id"]
    job_id = submit(client, make_spec(dataset={"id": dataset}, epochs=1))
    ctx.store.delete(f"datasets/{dataset}/X.npy")  # the disk lost the file under a queued job
    assert run_job(ctx, job_id) == "failed"
    error = client.get(f"/v1/jobs/{job_id}").json()["error"]
    assert error["code"] == "training_error"
    assert str(ctx.store.root) not in error["message"] and "site-packages" not in error["message"]
    assert job_id in error["message"]  # the operator finds the traceback by it


@pytest.mark.postgres
def test_concurrent_submits_with_one_idempotency_key_make_one_job(
    tmp_path: Path, pg_url: str
) -> None:
    settings = sqlite_settings(tmp_path, database_url=pg_url)
    upgrade_database(pg_url)
    answers: list[tuple[int, str]] = []
    with TestClient(create_app(settings)) as client:

        def post() -> None:
            r = client.post("/v1/jobs", json=make_spec(), headers={"Idempotency-Key": "same-key"})
            answers.append((r.status_code, r.json().get("id", r.text)))

        threads = [threading.Thread(target=post) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {status for status, _ in answers} == {202}, answers
        assert len({job for _, job in answers}) == 1
        assert len(client.get("/v1/jobs").json()["items"]) == 1


def test_bodies_over_their_route_limit_are_413_before_being_read(tmp_path: Path) -> None:
    settings = sqlite_settings(tmp_path, max_body_bytes=10_000, max_predict_bytes=50_000)
    upgrade_database(settings.resolved_database_url())
    with TestClient(create_app(settings)) as client:
        spec = make_spec(name="x" * 100, model={"layers": [{"type": "flatten"}] * 2000})
        r = client.post("/v1/jobs", json=spec)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks() -> "object":  # no Content-Length: counted as it streams
            for _ in range(100):
                yield b"[" * 1000

        r = client.post(
            "/v1/jobs/validate", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        r = client.post("/v1/models/abc/predict", content=b"0" * 60_000)
        assert r.status_code == 413
        r = client.post("/v1/models/abc/predict", json={"instances": [[0.0]]})
        assert r.status_code == 404  # under the limit: read and answered as usual
        assert client.get("/healthz").status_code == 200


def test_multipart_without_its_file_names_the_field(client: TestClient) -> None:
    r = client.post("/v1/datasets", data={"target": "label"}, files={"other": ("x.csv", b"a")})
    assert r.status_code == 422
    assert ["file"] in [d["loc"] for d in r.json()["error"]["details"]]


def test_returned_samples_are_counted_in_the_answer_cap(
    client: TestClient, ctx: WorkerContext
) -> None:
    job_id = submit(client, make_spec(epochs=1))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    rows = load_builtin("digits").X[:50].tolist()
    body = {"instances": rows, "mc_samples": 5000, "return_samples": True}
    r = client.post(f"/v1/models/{model_id}/predict", json=body)  # 2.5 M values returned
    assert r.status_code == 422 and r.json()["error"]["details"][0]["loc"] == ["return_samples"]
    body["return_samples"] = False  # the same work without the samples in the answer: served
    assert client.post(f"/v1/models/{model_id}/predict", json=body).status_code == 200
