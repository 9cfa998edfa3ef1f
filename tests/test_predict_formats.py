"""The predict route's two bodies: JSON rows and one binary .npy array (options as query
parameters); both give the same answer, and a bad .npy header is a 422 before any allocation."""

import io
import struct

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

NPY = {"content-type": "application/x-npy"}


@pytest.fixture
def model_id(client: TestClient, ctx: WorkerContext) -> str:
    job_id = submit(client, make_spec(epochs=2))
    assert run_job(ctx, job_id) == "succeeded"
    return str(client.get(f"/v1/jobs/{job_id}").json()["model_id"])


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def test_npy_body_answers_as_json_does(client: TestClient, model_id: str) -> None:
    X = load_builtin("digits").X[:4]
    url = f"/v1/models/{model_id}/predict"
    as_json = client.post(url, json={"instances": X.tolist(), "mc_samples": 20, "seed": 5})
    as_npy = client.post(
        url, content=_npy(X.astype(np.float64)), headers=NPY, params={"mc_samples": 20, "seed": 5}
    )
    assert as_json.status_code == as_npy.status_code == 200, as_npy.text
    assert as_npy.json() == as_json.json()
    plain = client.post(url, content=_npy(np.asfortranarray(X)), headers=NPY)
    expected = client.post(url, json={"instances": X.tolist()}).json()["predictions"]
    assert np.allclose(plain.json()["predictions"], expected, atol=1e-6)


def _header_claiming(shape: tuple[int, ...], dtype: str = "<f4") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@pytest.mark.parametrize(
    ("body", "params"),
    [
        (b"not an array", {}),
        (_header_claiming((10**15, 64)), {}),  # a 594-byte file claiming petabytes
        (_header_claiming((2, 64)) + b"\x00" * 10, {}),  # shorter than its header says
        (_header_claiming((2, 63)), {}),
        (_header_claiming((2, 64), "|O"), {}),
        (_header_claiming((2, 64), "<c16"), {}),
        (_npy(np.full((1, 64), np.nan, np.float32)), {}),
        (_npy(np.zeros((1, 64), np.float32)), {"mc_samples": "many"}),
        (_npy(np.zeros((1, 64), np.float32)), {"unknown": "1"}),
    ],
)
def test_bad_npy_bodies_are_422(
    client: TestClient, model_id: str, body: bytes, params: dict[str, str]
) -> None:
    r = client.post(f"/v1/models/{model_id}/predict", content=body, headers=NPY, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"], r.json()
