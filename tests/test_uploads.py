"""Uploads are read with bounded memory: .npz headers are checked before any data inflates,
arrays are staged on disk and memory-mapped, CSV errors name the column and the row."""

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.datasets.arrays import load_arrays
from service.datasets.checks import Limits
from service.datasets.parsing import parse_upload

LIMITS = Limits(max_rows=1_000_000, max_features=100_000)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_header_only(shape: tuple[int, ...], dtype: str = "<f4", tail: bytes = b"") -> bytes:
    buf = io.BytesIO()
    header = {"shape": shape, "fortran_order": False, "descr": dtype}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + tail


def _zip(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{name}.npy", data)
    return buf.getvalue()


def _error(client: TestClient, name: str, data: bytes, **form: str) -> tuple[int, dict]:
    r = client.post("/v1/datasets", files={"file": (name, data)}, data=form)
    return r.status_code, r.json().get("error", {})


def test_a_header_claiming_1e15_elements_is_refused_before_allocating(
    client: TestClient,
) -> None:
    y = _npy_header_only((4,), "<i8", np.arange(4).tobytes())
    data = _zip(X=_npy_header_only((10**15, 1), tail=b"\0" * 16), y=y)
    assert len(data) < 1000
    status, error = _error(client, "claims.npz", data)
    assert status == 422 and error["details"][0]["loc"] == ["file"]
    assert "rows" in error["message"]


def test_a_declared_size_over_the_limit_is_413(client: TestClient) -> None:
    y = _npy_header_only((4,), "<i8", np.arange(4).tobytes())
    data = _zip(X=_npy_header_only((4_000_000, 1_000_000), tail=b"\0" * 16), y=y)
    status, error = _error(client, "wide.npz", data)
    assert status == 413 and "declared size" in error["message"]


def test_a_truncated_array_is_422(client: TestClient) -> None:
    data = _zip(
        X=_npy_header_only((4, 2), tail=b"\0" * 8), y=_npy_header_only((4,), "<i8", b"\0" * 32)
    )
    status, error = _error(client, "short.npz", data)
    assert status == 422 and "bytes of data in X" in error["message"]


def test_object_and_string_arrays_are_refused(client: TestClient) -> None:
    strings = _npz(X=np.array([["a", "b"]] * 4), y=np.arange(4))
    assert _error(client, "s.npz", strings)[0] == 422
    objects = _npz(X=np.array([[1, None]] * 4, dtype=object), y=np.arange(4))
    status, error = _error(client, "o.npz", objects)
    assert status == 422 and "pickle" in error["message"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"a,b,label\n1,2,0\n3,x7,1\n", "column 'b', row 2 (line 3)"),
        (b"a,b,label\n1,2,0\n3,,1\n", "column 'b', row 2: the field is empty"),
        (b"a,b,label\n1,2,0\n3,4\n5,6,1\n", "Expected 3 fields on line 3. Received: 2"),
        (b"a,b,label\n1,2,0\n3,4,\n", None),  # an empty label is a class named ""
    ],
)
def test_csv_errors_name_the_column_and_row(
    client: TestClient, body: bytes, expected: str | None
) -> None:
    status, error = _error(client, "d.csv", body, target="label")
    if expected is None:
        assert status == 201
        return
    assert status == 422, error
    assert expected in error["message"] and error["details"][0]["loc"] == ["file"]


def test_csv_keeps_string_classes_and_regression_targets(client: TestClient) -> None:
    r = client.post(
        "/v1/datasets",
        files={"file": ("r.csv", b" a , b ,y\n1,2,0.5\n3,4,1.25\n5,6,2\n")},
        data={"target": "y"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["task"] == "regression" and r.json()["input_shape"] == [2]


def test_a_large_npz_is_converted_without_holding_it_in_memory(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(20_000, 400))  # float64: 64 MB
    y = np.arange(20_000) % 3
    path = tmp_path / "big.npz"
    np.savez(path, X=X, y=y)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tracemalloc.start()
    with open(path, "rb") as fh:
        arrays = parse_upload(fh, "big.npz", None, None, LIMITS, scratch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # X alone is 64 MB as float64 and 32 MB as float32; staging keeps one chunk in memory
    assert peak < X.nbytes / 4, f"peak {peak / 1e6:.1f} MB"
    assert isinstance(arrays.X, np.memmap) and arrays.X.dtype == np.float32
    np.testing.assert_array_equal(arrays.X[123], X[123].astype(np.float32))


def test_an_uploaded_npz_round_trips(client: TestClient, settings: object) -> None:
    X = np.asfortranarray(np.random.default_rng(1).normal(size=(300, 5)))
    r = client.post("/v1/datasets", files={"file": ("f.npz", _npz(X=X, y=np.arange(300) % 2))})
    assert r.status_code == 201, r.text
    from service.storage import LocalStore

    store = LocalStore(settings.resolved_artifact_dir())  # type: ignore[attr-defined]
    stored = load_arrays(store, f"datasets/{r.json()['id']}")
    assert stored.X.flags.c_contiguous and stored.X.dtype == np.float32
    np.testing.assert_allclose(stored.X, X.astype(np.float32))
    assert not list((store.root / ".scratch").iterdir())  # staging files are gone
