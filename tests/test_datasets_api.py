"""Data-set uploads: .npz and .csv, refused garbage, listing and pagination."""

import io

import numpy as np
from fastapi.testclient import TestClient


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_upload_npz_and_read_back(client: TestClient) -> None:
    data = npz(x=np.random.rand(40, 5).astype("float32"), y=np.arange(40) % 4)
    r = client.post("/v1/datasets", files={"file": ("a.npz", data)}, data={"name": "four"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["name"], ds["n_samples"], ds["input_shape"], ds["n_classes"], ds["task"]) == (
        "four",
        40,
        [5],
        4,
        "classification",
    )
    assert client.get(f"/v1/datasets/{ds['id']}").json() == ds


def test_upload_csv_with_string_labels(client: TestClient) -> None:
    text = "f1,f2,species\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,bird\n"
    r = client.post(
        "/v1/datasets", files={"file": ("a.csv", text.encode())}, data={"target": "species"}
    )
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["n_classes"] == 3 and ds["class_names"] == ["bird", "cat", "dog"]
    assert ds["input_shape"] == [2]


def test_bad_uploads_are_422(client: TestClient) -> None:
    nan = np.ones((10, 2), dtype="float32")
    nan[3, 1] = np.nan
    cases = [
        (("a.npz", npz(X=nan, y=np.zeros(10, dtype=int))), {}, ["file"]),
        (("a.npz", npz(X=np.ones((10, 2)), y=np.zeros(9, dtype=int))), {}, ["file"]),
        (("a.npz", npz(A=np.ones((10, 2)))), {}, ["file"]),
        (("a.npz", b"PK-not-a-zip"), {}, ["file"]),
        (("a.npz", npz(X=np.array([object()] * 10, dtype=object), y=np.zeros(10))), {}, ["file"]),
        (("a.csv", b"a,b\n1,2\n"), {"target": "c"}, ["target"]),
        (("a.csv", b"a,b\n1,x\n2,3\n"), {"target": "a"}, ["file"]),
        (("a.csv", b"a,b\n1,2\n"), {}, ["target"]),
        (("a.txt", b"hello"), {}, ["file"]),
    ]
    for file, form, loc in cases:
        r = client.post("/v1/datasets", files={"file": file}, data=form)
        assert r.status_code == 422, (file[0], r.text)
        assert r.json()["error"]["details"][0]["loc"] == loc
    assert client.get("/v1/datasets").json()["items"] == []


def test_upload_limit_is_413(tmp_path: object) -> None:
    from service.app import create_app
    from service.db import upgrade_database
    from service.settings import Settings

    s = Settings(data_dir=tmp_path, max_upload_bytes=1000, require_auth=False)  # type: ignore[arg-type]
    upgrade_database(s.resolved_database_url())
    with TestClient(create_app(s)) as c:
        big = npz(X=np.ones((100, 10)), y=np.zeros(100, dtype=int))
        assert c.post("/v1/datasets", files={"file": ("a.npz", big)}).status_code == 413


def test_list_is_newest_first_and_paginated(client: TestClient) -> None:
    ids = []
    for i in range(5):
        data = npz(X=np.ones((3, 2)) * i, y=np.array([0, 1, 0]))
        ids.append(client.post("/v1/datasets", files={"file": ("a.npz", data)}).json()["id"])
    page1 = client.get("/v1/datasets", params={"limit": 2}).json()
    page2 = client.get("/v1/datasets", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/v1/datasets", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    seen = [d["id"] for p in (page1, page2, page3) for d in p["items"]]
    assert seen == ids[::-1]
    assert page3["next_cursor"] is None
    assert client.get("/v1/datasets", params={"cursor": "%%%"}).status_code == 422
    assert client.get("/v1/datasets/unknown").status_code == 404


def test_npz_bomb_is_refused_before_inflating(settings: object) -> None:
    from service.app import create_app

    s = settings.model_copy(update={"max_uncompressed_bytes": 1_000_000})  # type: ignore[attr-defined]
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((2000, 1000), dtype="float32"), y=np.zeros(2000, int))
    assert len(buf.getvalue()) < 100_000  # 8 MB of zeros in a small archive
    with TestClient(create_app(s)) as c:
        r = c.post("/v1/datasets", files={"file": ("bomb.npz", buf.getvalue())})
        assert r.status_code == 413


def test_pickled_arrays_are_refused(client: TestClient) -> None:
    buf = io.BytesIO()
    np.savez(buf, X=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, dtype=int))
    r = client.post("/v1/datasets", files={"file": ("p.npz", buf.getvalue())})
    assert r.status_code == 422 and "pickle" in r.json()["error"]["message"]


def test_rows_of_uploaded_and_builtin_data_sets(client: TestClient) -> None:
    X = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=np.array([0, 1, 2, 1, 0]))
    ds = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()["id"]
    page = client.get(f"/v1/datasets/{ds}/rows", params={"offset": 3, "limit": 5}).json()
    assert page["total"] == 5 and page["offset"] == 3
    assert [r["row"] for r in page["rows"]] == [3, 4]
    assert page["rows"][0]["x"] == X[3].tolist() and page["rows"][0]["label"] == 1
    assert client.get(f"/v1/datasets/{ds}/rows", params={"offset": 9}).json()["rows"] == []
    assert client.get(f"/v1/datasets/{ds}/rows", params={"limit": 101}).status_code == 422
    assert client.get("/v1/datasets/unknown/rows").status_code == 404
    iris = client.get("/v1/datasets/builtin/iris/rows", params={"limit": 2}).json()
    assert iris["total"] == 150 and iris["rows"][0]["class_name"] == "setosa"
    assert len(iris["rows"][0]["x"]) == 4
    assert client.get("/v1/datasets/builtin/mnist/rows").status_code == 404


def test_csv_rows_carry_their_class_names(client: TestClient) -> None:
    body = b"a,b,kind\n1,2,cat\n3,4,dog\n5,6,cat\n"
    r = client.post("/v1/datasets", files={"file": ("p.csv", body)}, data={"target": "kind"})
    rows = client.get(f"/v1/datasets/{r.json()['id']}/rows").json()["rows"]
    assert [(x["x"], x["label"], x["class_name"]) for x in rows] == [
        ([1.0, 2.0], 0, "cat"),
        ([3.0, 4.0], 1, "dog"),
        ([5.0, 6.0], 0, "cat"),
    ]
