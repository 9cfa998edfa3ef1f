"""The hostile-input suite (issue 13, item 7): requests a hostile tenant can send with a valid key,
each answered with its status and the error JSON (or served), never a 500, never an answer that
echoes its input, with /healthz still quick and the data stored before unchanged afterwards.

One app for the whole module (SQLite, API keys on, tenants alice and bob) holds a baseline made
once: alice's uploaded data set, a model trained on it in-process, a seeded Monte-Carlo prediction,
a finished and a queued batch prediction. Each case is a row of data (`Case`); placeholders in
paths and bodies (`{ds}`, `{model}`, ...) name the baseline's ids.
"""

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app import create_app
from service.auth import TenantInvalid, create_key, hash_key
from service.datasets.arrays import load_builtin
from service.db import make_engine, make_session_factory, upgrade_database
from service.rows import ApiKey, utcnow
from service.settings import Settings
from service.storage import LocalStore
from tests.conftest import make_spec
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

SMALL_ANSWER = 4096  # bytes: an error answer never carries the request's input back
PROBE = {"instances_rows": 3, "mc_samples": 4, "seed": 11}
LIMITS = {  # small caps, so that the cases over them stay cheap to send
    "max_upload_bytes": 3_000_000,
    "max_predict_bytes": 1_000_000,
    "max_uncompressed_bytes": 20_000_000,
    "max_instances": 100,
    "max_mc_samples": 1000,
    "max_mc_values": 500_000,
    "max_returned_samples": 50_000,
    "predict_rate_per_tenant": 0,  # the unchanged-check predicts after every case
    "tensorboard": False,
}
MLP = {
    "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dropout", "rate": 0.3},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ]
}
DENSE10 = {"type": "dense", "units": 10, "activation": "softmax"}
DIGITS = load_builtin("digits")
ROW = [float(v) for v in DIGITS.X[0]]


# --- Building hostile bodies ------------------------------------------------------------------


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4", tail: bytes = b"") -> bytes:
    """An .npy header claiming `shape`, followed by `tail` instead of its data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"shape": shape, "fortran_order": False, "descr": descr}
    )
    return buf.getvalue() + tail


def zipped(compressed: bool = False, **members: bytes) -> bytes:
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", mode) as zf:
        for name, data in members.items():
            zf.writestr(name.replace("__", "/") + ".npy", data)
    return buf.getvalue()


def small_xy(X: Any = None, y: Any = None) -> bytes:
    X = np.random.default_rng(0).random((20, 4)).astype("float32") if X is None else X
    return npz(X=X, y=np.arange(20) % 3 if y is None else y)


def spec_text(spec: dict[str, Any], **raw: str) -> bytes:
    """The spec as JSON with a value replaced by a raw token (NaN, 1e309, ...) JSON cannot say."""
    text = json.dumps(spec)
    for key, token in raw.items():
        text = text.replace(f'"@{key}@"', token)
    return text.encode()


def spec(**overrides: Any) -> dict[str, Any]:
    return make_spec(**{"model": MLP, **overrides})


def baseline_spec(dataset_id: str) -> dict[str, Any]:
    """Alice's training job (sent again, with its Idempotency-Key, by one case)."""
    return spec(
        epochs=2, dataset={"id": dataset_id}, name="hostile-mlp", uncertainty={"mc_samples": 10}
    )


def with_layer(index: int, **changes: Any) -> dict[str, Any]:
    layers = [dict(layer) for layer in MLP["layers"]]
    layers[index].update(changes)
    return spec(model={"layers": layers})


def deep(levels: int) -> bytes:
    return b'{"name": ' + b"[" * levels + b"]" * levels + b"}"


def chunks(total: int, piece: bytes = b"0" * 65536) -> Iterator[bytes]:
    """A body sent without Content-Length: only counting while it streams can stop it."""
    for _ in range(total // len(piece) + 1):
        yield piece


def csv(text: str | bytes, target: str | None = "label", name: str = "d.csv") -> dict[str, Any]:
    data = text.encode() if isinstance(text, str) else text
    return {"files": {"file": (name, data)}, "data": {"target": target} if target else {}}


def upload(data: bytes, name: str = "d.npz", **form: str) -> dict[str, Any]:
    return {"files": {"file": (name, data)}, "data": form}


def instances(rows: Any, **options: Any) -> dict[str, Any]:
    return {"json": {"instances": rows, **options}}


# --- The cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile request and what it must get. `code` None: it is served (2xx)."""

    method: str
    path: str
    status: int
    code: str | None
    loc: list[Any] | None = None
    who: str = "alice"  # alice, bob, none, or a raw Authorization header value
    request: dict[str, Any] = field(default_factory=dict)  # httpx kwargs; values may be callables
    check: Callable[[Any, dict[str, str]], None] | None = None


def case(cid: str, *args: Any, bug: str | None = None, **kwargs: Any) -> Any:
    """A parametrized Case; `bug` names a known defect (the case then must fail: strict).
    The defects this suite found first are fixed: none is marked today."""
    request = {k: kwargs.pop(k) for k in list(kwargs) if k not in Case.__dataclass_fields__}
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(Case(*args, request=request, **kwargs), id=cid, marks=marks)


def same_job(answer: Any, ids: dict[str, str]) -> None:
    assert answer.json()["id"] == ids["job"]


def other_job(answer: Any, ids: dict[str, str]) -> None:
    assert answer.json()["id"] != ids["job"] and answer.json()["status"] == "queued"


def read_whole(answer: Any, ids: dict[str, str]) -> None:
    assert answer.json()["input_shape"] == [4] and answer.json()["n_samples"] == 20


JOBS, VALIDATE, DATASETS = "/v1/jobs", "/v1/jobs/validate", "/v1/datasets"
PREDICT = "/v1/models/{model}/predict"
RESULTS = "/v1/batch-predictions/{batch}/results"
BATCH = "/v1/models/{model}/batch-predictions"
JSON_CT = {"content-type": "application/json"}
NPY_CT = {"content-type": "application/x-npy"}
V = ["model", "layers"]


def v422(cid: str, method: str, path: str, loc: list[Any] | None, **kwargs: Any) -> Any:
    """A case answered 422 validation_error at `loc`."""
    return case(cid, method, path, 422, "validation_error", loc, **kwargs)


def raw(data: bytes, ctype: dict[str, str] = JSON_CT) -> dict[str, Any]:
    return {"content": data, "headers": ctype}


def file_422(cid: str, data: bytes, name: str = "d.npz", **form: str) -> Any:
    """An upload refused at ["file"]."""
    return v422(cid, "POST", DATASETS, ["file"], **upload(data, name, **form))


def csv_422(cid: str, text: str | bytes, loc: str = "file", target: str | None = "label") -> Any:
    return v422(cid, "POST", DATASETS, [loc], **csv(text, target))


def npy_422(cid: str, data: bytes) -> Any:
    """A binary predict body refused at ["instances"]."""
    return v422(cid, "POST", PREDICT, ["instances"], **raw(data, NPY_CT))


def hidden(cid: str, method: str, path: str, **kwargs: Any) -> Any:
    """Alice's object, asked for by bob: it does not exist for him."""
    return case(cid, method, path, 404, "not_found", who="bob", **kwargs)


# fmt: off
MALFORMED_JSON = [
    case("truncated", "POST", JOBS, 400, "invalid_json", **raw(b'{"model": {"layers": [')),
    case("trailing-garbage", "POST", VALIDATE, 400, "invalid_json",
         **raw(json.dumps(spec()).encode() + b"}}")),
    v422("nan-split", "POST", VALIDATE, ["validation_split"],
         **raw(spec_text(spec(validation_split="@v@"), v="NaN"))),
    v422("infinity-lr", "POST", VALIDATE, ["optimizer", "learning_rate"],
         **raw(spec_text(spec(optimizer={"type": "adam", "learning_rate": "@v@"}), v="Infinity"))),
    v422("minus-infinity-rate", "POST", JOBS, [*V, 1, "rate"],
         **raw(spec_text(with_layer(1, rate="@v@"), v="-Infinity"))),
    v422("1e309-epochs", "POST", JOBS, ["epochs"], **raw(spec_text(spec(epochs="@v@"), v="1e309"))),
    v422("1e309-l2", "POST", VALIDATE, [*V, 0, "kernel_regularizer", "l2"],
         **raw(spec_text(with_layer(0, kernel_regularizer={"l2": "@v@"}), v="1e309"))),
    case("nesting-10000", "POST", JOBS, 400, "invalid_json",
         **raw(deep(10_000))),
    case("nesting-10000-predict", "POST", PREDICT, 400, "invalid_json",
         **raw(b'{"instances": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")),
    case("int-5000-digits", "POST", JOBS, 400, "invalid_json",
         **raw(spec_text(spec(epochs="@v@"), v="9" * 5000))),
    v422("int-30-digits-epochs", "POST", JOBS, ["epochs"],
         **raw(spec_text(spec(epochs="@v@"), v="9" * 30))),
    v422("int-2**64-seed", "POST", VALIDATE, ["seed"], json=spec(seed=2**64)),
    v422("duplicate-keys-last-bad", "POST", VALIDATE, ["epochs"],
         **raw(json.dumps(spec())[:-1].encode() + b', "epochs": 0}')),
    case("bom", "POST", VALIDATE, 200, None, **raw(b"\xef\xbb\xbf" + json.dumps(spec()).encode())),
    case("text-plain", "POST", VALIDATE, 422, "invalid_body",
         **raw(json.dumps(spec()).encode(), {"content-type": "text/plain"})),
    case("xml", "POST", JOBS, 422, "invalid_body",
         **raw(b"<spec><epochs>1</epochs></spec>", {"content-type": "application/xml"})),
    case("form-to-jobs", "POST", JOBS, 422, "invalid_body", data={"epochs": "1"}),
    case("list-body", "POST", JOBS, 422, "invalid_body", json=[spec()]),
    case("string-body", "POST", VALIDATE, 422, "invalid_body", json="spec"),
    case("number-body", "POST", JOBS, 422, "invalid_body", json=42),
    case("empty-body", "POST", JOBS, 422, "validation_error", **raw(b"")),
    case("predict-truncated", "POST", PREDICT, 400, "invalid_json", **raw(b'{"instances": [[1, 2')),
    case("predict-list-body", "POST", PREDICT, 422, "invalid_body", json=[[0.0] * 64]),
    case("predict-utf16", "POST", PREDICT, 400, "invalid_json",
         **raw(json.dumps({"instances": [ROW]}).encode("utf-16"))),
]

SPEC_ATTACKS = [
    v422("layer-type-100kb", "POST", JOBS, [*V, 0],
         json=spec(model={"layers": [{"type": "x" * 100_000}, DENSE10]})),
    v422("layer-field-100kb", "POST", VALIDATE, None,
         json=with_layer(0, **{"k" * 100_000: 1})),
    v422("name-100kb", "POST", JOBS, ["name"], json=spec(name="n" * 100_000)),
    v422("activation-100kb", "POST", VALIDATE, [*V, 0, "activation"],
         json=with_layer(0, activation="r" * 100_000)),
    v422("layers-201", "POST", JOBS, V,
         json=spec(model={"layers": [{"type": "flatten"}] * 200 + [DENSE10]})),
    v422("layers-10001", "POST", VALIDATE, V,
         json=spec(model={"layers": [{"type": "flatten"}] * 10_000 + [DENSE10]})),
    v422("layers-as-object", "POST", JOBS, V, json=spec(model={"layers": {"0": DENSE10}})),
    v422("layer-as-string", "POST", JOBS, [*V, 0], json=spec(model={"layers": ["dense", DENSE10]})),
    v422("metrics-11", "POST", JOBS, ["metrics"], json=spec(metrics=["accuracy"] * 11)),
    v422("phases-21", "POST", VALIDATE, ["phases"], json=spec(phases=[{"epochs": 1}] * 21)),
    v422("piecewise-10001", "POST", VALIDATE, ["lr_schedule", "boundaries"],
         json=spec(lr_schedule={"type": "piecewise", "boundaries": list(range(1, 10_002)),
                                "values": [0.1] * 10_002})),
    v422("units-negative", "POST", JOBS, [*V, 0, "units"], json=with_layer(0, units=-5)),
    v422("units-huge", "POST", JOBS, [*V, 0, "units"], json=with_layer(0, units=10**30)),
    v422("units-over-max", "POST", VALIDATE, [*V, 0, "units"], json=with_layer(0, units=65_537)),
    v422("units-float", "POST", VALIDATE, [*V, 0, "units"], json=with_layer(0, units=1.5)),
    v422("params-over-200m", "POST", VALIDATE, None,
         json=spec(model={"layers": [{"type": "dense", "units": 65_536}] * 3 + [DENSE10]})),
    v422("epochs-negative", "POST", JOBS, ["epochs"], json=spec(epochs=-1)),
    v422("epochs-over-max", "POST", JOBS, ["epochs"], json=spec(epochs=10_001)),
    v422("batch-size-zero", "POST", JOBS, ["batch_size"], json=spec(batch_size=0)),
    v422("batch-size-huge", "POST", JOBS, ["batch_size"], json=spec(batch_size=2**40)),
    v422("rate-negative", "POST", JOBS, [*V, 1, "rate"], json=with_layer(1, rate=-0.1)),
    v422("rate-one", "POST", VALIDATE, [*V, 1, "rate"], json=with_layer(1, rate=1.0)),
    v422("rate-as-string", "POST", VALIDATE, [*V, 1, "rate"], json=with_layer(1, rate="half")),
    v422("split-negative", "POST", VALIDATE, ["validation_split"],
         json=spec(validation_split=-0.1)),
    v422("lr-zero", "POST", VALIDATE, ["optimizer", "learning_rate"],
         json=spec(optimizer={"type": "adam", "learning_rate": 0})),
    v422("unknown-optimizer", "POST", JOBS, ["optimizer"], json=spec(optimizer={"type": "adam9"})),
    v422("unknown-schedule", "POST", JOBS, ["lr_schedule"],
         json=spec(lr_schedule={"type": "cosine9"})),
    v422("unknown-initializer", "POST", JOBS, [*V, 0, "kernel_initializer"],
         json=with_layer(0, kernel_initializer="he")),
    v422("unknown-activation", "POST", JOBS, [*V, 0, "activation"],
         json=with_layer(0, activation="Relu")),
    v422("unknown-loss", "POST", JOBS, ["loss"], json=spec(loss="hinge9")),
    v422("unknown-preset", "POST", VALIDATE, ["model", "preset"],
         json=spec(model={**MLP, "preset": "fast"})),
    v422("preset-selu-with-dropout", "POST", VALIDATE, [*V, 1],
         json=spec(model={**MLP, "preset": "self_normalizing"})),
    v422("preset-default-alpha-dropout", "POST", VALIDATE, [*V, 1],
         json=spec(model={"preset": "default", "layers": [
             MLP["layers"][0], {"type": "alpha_dropout", "rate": 0.1}, DENSE10]})),
    v422("spec-version-3", "POST", JOBS, ["spec_version"], json=spec(spec_version=3)),
    v422("spec-version-0", "POST", JOBS, ["spec_version"], json=spec(spec_version=0)),
    v422("seed-negative", "POST", VALIDATE, ["seed"], json=spec(seed=-1)),
    v422("extra-top-level", "POST", JOBS, ["__proto__"], json=spec(__proto__={"admin": True})),
    v422("extra-in-optimizer", "POST", JOBS, ["optimizer", "lr"],
         json=spec(optimizer={"type": "adam", "lr": 0.1})),
    v422("extra-in-dataset", "POST", JOBS, ["dataset", "path"],
         json=spec(dataset={"builtin": "digits", "path": "/etc/passwd"})),
    v422("dataset-id-too-long", "POST", JOBS, ["dataset", "id"],
         json=spec(dataset={"id": "d" * 65})),
    v422("dataset-id-traversal", "POST", JOBS, ["dataset", "id"],
         json=spec(dataset={"id": "../../etc"})),
    v422("dataset-of-bob-by-alice", "POST", JOBS, ["dataset", "id"],
         json=lambda ids: spec(dataset={"id": ids["ds_b"]})),
    v422("dataset-of-alice-by-bob", "POST", JOBS, ["dataset", "id"], who="bob",
         json=lambda ids: spec(dataset={"id": ids["ds"]})),
    v422("base-model-of-alice-by-bob", "POST", JOBS, ["base_model", "model_id"], who="bob",
         json=lambda ids: spec(base_model={"model_id": ids["model"]}, model={"layers": [DENSE10]})),
    v422("base-model-ref-of-alice-by-bob", "POST", VALIDATE, ["base_model", "model_id"], who="bob",
         json=spec(base_model={"model_id": "hostile-mlp@latest"}, model={"layers": [DENSE10]})),
    v422("max-runtime-zero", "POST", JOBS, ["max_runtime_seconds"],
         json=spec(max_runtime_seconds=0)),
    v422("uncertainty-samples-over", "POST", JOBS, ["uncertainty", "mc_samples"],
         json=spec(uncertainty={"mc_samples": 1001})),
]

Y4 = npy_header((4,), "<i8", b"\0" * 32)
UPLOADS = [
    case("npz-bomb", "POST", DATASETS, 413, "payload_too_large", **upload(zipped(
        True, X=npy(np.zeros((6000, 1000), "float32")), y=npy(np.zeros(6000, "int64"))))),
    file_422("header-1e15-rows", zipped(X=npy_header((10**15, 1), tail=b"\0" * 16), y=Y4)),
    case("header-huge-declared-size", "POST", DATASETS, 413, "payload_too_large",
         **upload(zipped(X=npy_header((4_000_000, 1_000_000), tail=b"\0" * 16), y=Y4))),
    file_422("header-garbage", zipped(X=b"\x93NUMPY\x01\x00\x10\x00{'descr': ...}   \n", y=Y4)),
    file_422("truncated-data", zipped(X=npy_header((4, 2), tail=b"\0" * 8), y=Y4)),
    file_422("truncated-zip", small_xy()[:300]),
    file_422("object-array", npz(X=np.array([[1, None]] * 20, dtype=object), y=np.arange(20) % 2)),
    file_422("complex-array", small_xy(X=np.zeros((20, 4), np.complex64))),
    file_422("timedelta-array", small_xy(X=np.zeros((20, 4), "m8[s]"))),
    file_422("datetime-array", small_xy(X=np.zeros((20, 4), "M8[D]"))),
    file_422("string-array", small_xy(X=np.full((20, 4), "abc"))),
    file_422("structured-array", small_xy(X=np.zeros(20, dtype=[("a", "f4"), ("b", "f4")]))),
    file_422("uint64-labels-2**63", small_xy(y=np.array([0, 1, 2**63] + [1] * 17, np.uint64))),
    file_422("negative-labels", small_xy(y=np.array([-1] + [1] * 19))),
    file_422("labels-over-max-classes", small_xy(y=np.array([10**9] + [1] * 19))),
    case("fortran-order-works", "POST", DATASETS, 201, None, check=read_whole, **upload(small_xy(
        X=np.asfortranarray(np.random.default_rng(1).random((20, 4)).astype("float32"))))),
    file_422("zero-features", small_xy(X=np.zeros((20, 0), "float32"))),
    file_422("one-row", npz(X=np.zeros((1, 4), "float32"), y=np.array([0]))),
    file_422("nan-in-X", small_xy(X=np.full((20, 4), np.nan, "float32"))),
    file_422("inf-in-X", small_xy(X=np.full((20, 4), np.inf, "float32"))),
    file_422("mismatched-lengths", small_xy(y=np.arange(19) % 2)),
    file_422("missing-y", npz(X=np.zeros((20, 4)))),
    case("members-in-folders-work", "POST", DATASETS, 201, None, **upload(zipped(
        ______X=npy(np.ones((20, 4), "float32")), ______y=npy(np.arange(20) % 2)))),
    csv_422("csv-ragged", "a,b,label\n1,2,0\n3,4\n5,6,1\n"),
    csv_422("csv-bad-number", "a,b,label\n1,2,0\n3,1.2.3,1\n"),
    csv_422("csv-empty-field", "a,b,label\n1,2,0\n3,,1\n"),
    csv_422("csv-bare-cr", b'a,label\n"1\r2,0\n3,1\n'),
    csv_422("csv-1mb-field", b"a,label\n" + b"1" * 1_000_000 + b",0\n2,1\n"),
    csv_422("csv-only-target", "label\n0\n1\n0\n"),
    csv_422("csv-missing-target", "a,b\n1,0\n2,1\n", "target", target=None),
    csv_422("csv-target-not-in-header", "a,b\n1,0\n2,1\n", "target", target="c"),
    csv_422("csv-non-utf8", b"a\xff\xfe,label\n1,0\n2,\xe91\n"),
    csv_422("csv-nan-values", "a,label\nnan,0\n2,1\n"),
    csv_422("csv-header-only", "a,b,label\n"),
    csv_422("csv-empty-file", b""),
    csv_422("csv-nul-bytes", b"a,label\n1\x00,0\n2,1\n"),
    v422("csv-regression-task-on-strings", "POST", DATASETS, ["task"],
         files={"file": ("d.csv", b"a,label\n1,x\n2,y\n")},
         data={"target": "label", "task": "regression"}),
    v422("unknown-task", "POST", DATASETS, ["task"], **upload(small_xy(), task="clustering")),
    file_422("no-extension-neither", b"\x7fELF\x02\x01\x01" + b"\0" * 100, name="payload"),
    case("no-extension-zip-works", "POST", DATASETS, 201, None,
         **upload(small_xy(), name="payload")),
    v422("multipart-without-file", "POST", DATASETS, ["file"],
         files={"other": ("x.csv", b"a")}, data={"target": "label"}),
    v422("upload-as-json", "POST", DATASETS, ["file"], json={"file": "X,y\n1,0\n"}),
]

PREDICTIONS = [
    v422("wrong-feature-count", "POST", PREDICT, ["instances"], **instances([[0.0] * 63])),
    v422("nan-instances", "POST", PREDICT, ["instances"],
         **raw(b'{"instances": [[' + b"NaN, " * 63 + b"NaN]]}")),
    v422("1e309-instances", "POST", PREDICT, ["instances"],
         **raw(b'{"instances": [[' + b"1e309, " * 63 + b"1]]}")),
    v422("too-many-instances", "POST", PREDICT, ["instances"], **instances([[0.0] * 64] * 101)),
    v422("mc-samples-negative", "POST", PREDICT, ["mc_samples"],
         **instances([ROW], mc_samples=-1)),
    v422("mc-samples-over-cap", "POST", PREDICT, ["mc_samples"],
         **instances([ROW], mc_samples=1001)),
    v422("mc-values-over-cap", "POST", PREDICT, ["mc_samples"],
         **instances([ROW] * 100, mc_samples=1000)),
    v422("return-samples-over-cap", "POST", PREDICT, ["return_samples"],
         **instances([ROW] * 10, mc_samples=1000, return_samples=True)),
    v422("return-samples-without-mc", "POST", PREDICT, ["return_samples"],
         **instances([ROW], return_samples=True)),
    v422("interval-on-classifier", "POST", PREDICT, ["interval"],
         **instances([ROW], mc_samples=5, interval=0.9)),
    v422("ragged-instances", "POST", PREDICT, ["instances"], **instances([ROW, ROW[:10]])),
    v422("string-instances", "POST", PREDICT, ["instances"], **instances([["a"] * 64])),
    v422("empty-instances", "POST", PREDICT, ["instances"], **instances([])),
    v422("instances-object", "POST", PREDICT, ["instances"], json={"instances": {"0": ROW}}),
    v422("instances-3d", "POST", PREDICT, ["instances"], **instances([[ROW]])),
    v422("seed-over-max", "POST", PREDICT, ["seed"],
         **instances([ROW], mc_samples=2, seed=2**31)),
    v422("predict-extra-field", "POST", PREDICT, ["signature"],
         **instances([ROW], signature="x")),
    npy_422("npy-bad-header", b"\x93NUMPY\x01\x00\xff\xff{garbage"),
    npy_422("npy-not-npy", b"hello world"),
    npy_422("npy-header-1e12-rows", npy_header((10**12, 64), tail=b"\0" * 64)),
    npy_422("npy-short-data", npy(np.zeros((2, 64), "float32"))[:-4]),
    npy_422("npy-complex", npy(np.zeros((2, 64), np.complex64))),
    npy_422("npy-strings", npy(np.full((2, 64), "ab"))),
    npy_422("npy-wrong-shape", npy(np.zeros((2, 8, 8), "float32"))),
    case("npy-float64-fortran-works", "POST", PREDICT, 200, None,
         **raw(npy(np.asfortranarray(DIGITS.X[:2].astype("float64"))), NPY_CT)),
    v422("npy-bad-query", "POST", PREDICT, ["mc_samples"],
         params={"mc_samples": "many"}, **raw(npy(DIGITS.X[:2].astype("float32")), NPY_CT)),
    v422("tfs-instances-string", "POST", "/v1/models/{model}:predict", None,
         json={"instances": "x"}),
    v422("oip-garbage", "POST", "/v2/models/hostile-mlp/infer", None,
         json={"inputs": [{"name": "x"}]}),
    v422("batch-mc-over-cap", "POST", BATCH, ["mc_samples"],
         json=lambda ids: {"dataset": {"id": ids["ds"]}, "mc_samples": 1001}),
    v422("batch-on-bobs-data", "POST", BATCH, ["dataset", "id"],
         json=lambda ids: {"dataset": {"id": ids["ds_b"]}}),
]

PAGES_AND_IDS = [
    v422("cursor-garbage", "GET", JOBS, ["cursor"], params={"cursor": "%%%"}),
    v422("cursor-60-digits", "GET", "/v1/models", ["cursor"], params={"cursor": "OTk5" * 20}),
    v422("cursor-19-digits", "GET", DATASETS, ["cursor"],
         params={"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OQ=="}),
    v422("cursor-negative", "GET", DATASETS, ["cursor"], params={"cursor": "LTU="}),
    v422("cursor-too-long", "GET", "/v1/batch-predictions", ["query", "cursor"],
         params={"cursor": "A" * 101}),
    v422("limit-zero", "GET", JOBS, ["query", "limit"], params={"limit": 0}),
    v422("limit-201", "GET", "/v1/models", ["query", "limit"], params={"limit": 201}),
    v422("limit-negative", "GET", DATASETS, ["query", "limit"], params={"limit": -1}),
    v422("limit-string", "GET", "/v1/batch-predictions", ["query", "limit"],
         params={"limit": "x"}),
    v422("limit-huge", "GET", JOBS, ["query", "limit"], params={"limit": "9" * 40}),
    v422("limit-float", "GET", "/v1/models", ["query", "limit"], params={"limit": "1.5"}),
    v422("status-unknown", "GET", JOBS, ["query", "status"], params={"status": "hacked"}),
    v422("tag-without-colon", "GET", "/v1/models", ["tag"], params={"tag": "stage"}),
    v422("sort-minus-mean", "GET", RESULTS, ["sort"], params={"sort": "-mean"}),
    v422("sort-std", "GET", RESULTS, ["sort"], params={"sort": "std"}),
    v422("sort-unknown", "GET", RESULTS, ["sort"], params={"sort": "row; DROP TABLE jobs"}),
    v422("sort-double-minus", "GET", RESULTS, ["sort"], params={"sort": "--row"}),
    case("results-offset-huge", "GET", RESULTS, 200, None, params={"offset": "9" * 30}),
    v422("results-offset-negative", "GET", RESULTS, ["query", "offset"], params={"offset": -1}),
    v422("results-limit-1001", "GET", RESULTS, ["query", "limit"], params={"limit": 1001}),
    v422("results-format", "GET", RESULTS, ["query", "format"], params={"format": "pickle"}),
    v422("artifact-format", "GET", "/v1/models/{model}/artifact", ["query", "format"],
         params={"format": "../../x"}),
    v422("artifact-quantize-keras", "GET", "/v1/models/{model}/artifact", ["quantize"],
         params={"quantize": "int8"}),
    v422("logs-limit-zero", "GET", "/v1/jobs/{job}/logs", ["query", "limit"],
         params={"limit": 0}),
    v422("logs-after-huge", "GET", "/v1/jobs/{job}/logs", ["query", "after"],
         params={"after": "9" * 30}),
    case("events-huge-last-event-id", "GET", "/v1/jobs/{job}/events", 200, None,
         headers={"Last-Event-ID": "9" * 40}),
    case("plot-traversal", "GET", "/v1/jobs/{job}/plots/..%2F..%2Fetc", 404, "not_found"),
    case("plot-name-unknown", "GET", "/v1/models/{model}/plots/passwd", 404, "not_found",
         ["name"]),
    case("id-10000-chars", "GET", "/v1/jobs/" + "j" * 10_000, 404, "not_found"),
    case("model-id-10000-chars", "GET", "/v1/models/" + "m" * 10_000, 404, "not_found"),
    case("id-traversal", "GET", "/v1/datasets/..%2F..%2Fetc%2Fpasswd", 404, "not_found"),
    case("artifact-traversal", "GET", "/v1/models/..%2F..%2Fkts.db/artifact", 404, "not_found"),
    case("id-unicode", "GET", "/v1/jobs/模型-ü-😀", 404, "not_found"),
    case("id-nul", "GET", "/v1/models/a%00b", 404, "not_found"),
    case("model-ref-huge-version", "GET", "/v1/models/hostile-mlp@" + "9" * 21, 404,
         "not_found"),
    case("oip-huge-version", "GET", "/v2/models/hostile-mlp/versions/" + "9" * 25, 404,
         "not_found"),
    case("model-ref-long-alias", "GET", "/v1/models/hostile-mlp@" + "a" * 500, 404, "not_found"),
    v422("alias-latest", "PUT", "/v1/models/{model}/aliases/latest", ["alias"]),
    v422("alias-too-long", "PUT", "/v1/models/{model}/aliases/" + "a" * 65, ["alias"]),
    case("tags-on-a-dataset-id", "PUT", "/v1/models/{ds}/tags", 404, "not_found",
         json={"tags": {"a": "b"}}),
    v422("tags-51", "PUT", "/v1/models/{model}/tags", ["tags"],
         json={"tags": {f"k{i}": "v" for i in range(51)}}),
    v422("tag-key-101", "PUT", "/v1/models/{model}/tags", None, json={"tags": {"k" * 101: "v"}}),
    v422("tags-not-strings", "PUT", "/v1/models/{model}/tags", ["tags", "a"],
         json={"tags": {"a": {"b": 1}}}),
]

AUTH_AND_TENANCY = [
    case("no-key", "GET", JOBS, 401, "unauthorized", who="none"),
    case("bearer-without-key", "GET", DATASETS, 401, "unauthorized", who="Bearer"),
    case("basic-scheme", "GET", "/v1/models", 401, "unauthorized", who="Basic YWxpY2U6cGFzcw=="),
    case("unknown-key", "POST", JOBS, 401, "unauthorized", who="Bearer kts_unknown", json=spec()),
    case("revoked-key", "GET", "/v1/models/{model}", 401, "unauthorized", who="revoked"),
    case("key-10kb", "GET", JOBS, 401, "unauthorized", who="Bearer " + "k" * 10_000),
    hidden("bob-reads-alices-dataset", "GET", "/v1/datasets/{ds}"),
    hidden("bob-reads-alices-job", "GET", "/v1/jobs/{job}"),
    hidden("bob-reads-alices-logs", "GET", "/v1/jobs/{job}/logs"),
    hidden("bob-reads-alices-model", "GET", "/v1/models/{model}"),
    hidden("bob-by-name-ref", "GET", "/v1/models/hostile-mlp@latest"),
    hidden("bob-downloads-alices-model", "GET", "/v1/models/{model}/artifact"),
    hidden("bob-reads-alices-batch", "GET", "/v1/batch-predictions/{batch}"),
    hidden("bob-reads-alices-results", "GET", RESULTS),
    hidden("bob-predicts-alices-model", "POST", PREDICT, **instances([ROW])),
    hidden("bob-deletes-alices-dataset", "DELETE", "/v1/datasets/{ds}"),
    hidden("bob-deletes-alices-model", "DELETE", "/v1/models/{model}"),
    hidden("bob-deletes-alices-job", "DELETE", "/v1/jobs/{job}"),
    hidden("bob-tags-alices-model", "PUT", "/v1/models/{model}/tags", json={"tags": {"o": "b"}}),
    hidden("bob-aliases-alices-model", "PUT", "/v1/models/{model}/aliases/champion"),
    hidden("bob-cancels-alices-batch", "POST", "/v1/batch-predictions/{queued}/cancel"),
    hidden("bob-optimizes-alices-model", "POST", "/v1/models/{model}/optimize",
           json={"weights": "int8"}),
]

KEY = {"Idempotency-Key": "baseline"}
IDEMPOTENCY = [
    case("same-key-other-body", "POST", JOBS, 409, "conflict", json=spec(epochs=3), headers=KEY),
    case("same-key-same-body", "POST", JOBS, 202, None, check=same_job,
         json=lambda ids: baseline_spec(ids["ds"]), headers=KEY),
    case("same-key-other-tenant", "POST", JOBS, 202, None, who="bob", check=other_job,
         json=spec(epochs=3), headers=KEY),
    case("key-with-colon", "POST", JOBS, 202, None, who="bob", check=other_job,
         json=spec(epochs=4), headers={"Idempotency-Key": "alice:baseline"}),
    v422("key-over-200", "POST", JOBS, ["header", "idempotency-key"],
         json=spec(), headers={"Idempotency-Key": "k" * 201}),
]

TOO_LARGE = {"status": 413, "code": "payload_too_large"}
LIMITS_AND_ROUTES = [
    case("spec-over-body-limit", "POST", JOBS, **TOO_LARGE,
         json=spec(model={"layers": [{"type": "flatten"}] * 60_000})),
    case("streamed-spec-over-limit", "POST", VALIDATE, **TOO_LARGE, headers=JSON_CT,
         content=lambda ids: chunks(1_200_000, b"[" * 65536)),
    case("predict-over-limit", "POST", PREDICT, **TOO_LARGE, **instances([ROW] * 4000)),
    case("upload-over-limit", "POST", DATASETS, **TOO_LARGE, **upload(b"\0" * 3_100_000)),
    case("streamed-upload-over-limit", "POST", DATASETS, **TOO_LARGE,
         headers={"content-type": "multipart/form-data; boundary=x"},
         content=lambda ids: chunks(3_100_000)),
    case("unknown-route", "GET", "/v1/secrets", 404, "not_found"),
    case("unknown-version", "POST", "/v3/jobs", 404, "not_found", json=spec()),
    case("put-jobs", "PUT", JOBS, 405, "method_not_allowed", json=spec()),
    case("delete-collection", "DELETE", DATASETS, 405, "method_not_allowed"),
    case("patch-model", "PATCH", "/v1/models/{model}", 405, "method_not_allowed", json={}),
    case("post-healthz", "POST", "/healthz", 405, "method_not_allowed"),
    case("delete-dataset-in-use", "DELETE", "/v1/datasets/{ds}", 409, "conflict"),
    case("delete-model-in-use", "DELETE", "/v1/models/{model}", 409, "conflict"),
    case("delete-queued-job", "DELETE", "/v1/jobs/{queued}", 409, "conflict"),
    case("cancel-ended-job", "POST", "/v1/jobs/{job}/cancel", 409, "conflict"),
    case("cancel-ended-batch", "POST", "/v1/batch-predictions/{batch}/cancel", 409, "conflict"),
    case("results-not-ready", "GET", "/v1/batch-predictions/{queued}/results", 409, "conflict"),
]
# fmt: on

ALL_CASES = [
    *MALFORMED_JSON,
    *SPEC_ATTACKS,
    *UPLOADS,
    *PREDICTIONS,
    *PAGES_AND_IDS,
    *AUTH_AND_TENANCY,
    *IDEMPOTENCY,
    *LIMITS_AND_ROUTES,
]


# --- The module's app and baseline ------------------------------------------------------------


@dataclass
class Env:
    client: TestClient
    keys: dict[str, str]
    ids: dict[str, str]
    snapshot: dict[str, Any]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _settings(root: Path) -> Settings:
    fields = Settings.model_fields
    extra = {k: v for k, v in LIMITS.items() if k in fields}  # a cap another change dropped
    return Settings(data_dir=root, require_auth=True, **extra)  # type: ignore[arg-type]


def _snapshot(client: TestClient, alice: dict[str, str], ids: dict[str, str]) -> dict[str, Any]:
    """What must not change: the data set, the model, the jobs and a seeded MC prediction."""
    body = {
        "instances": DIGITS.X[: PROBE["instances_rows"]].tolist(),
        "mc_samples": PROBE["mc_samples"],
        "seed": PROBE["seed"],
    }
    answers = {
        "dataset": client.get(f"/v1/datasets/{ids['ds']}", headers=alice),
        "model": client.get(f"/v1/models/{ids['model']}", headers=alice),
        "job": client.get(f"/v1/jobs/{ids['job']}", headers=alice),
        "batch": client.get(f"/v1/batch-predictions/{ids['batch']}", headers=alice),
        "queued": client.get(f"/v1/batch-predictions/{ids['queued']}", headers=alice),
        "prediction": client.post(f"/v1/models/{ids['model']}/predict", json=body, headers=alice),
    }
    for name, r in answers.items():
        assert r.status_code == 200, (name, r.text[:500])
    return {name: r.json() for name, r in answers.items()}


def _baseline(client: TestClient, ctx: WorkerContext, keys: dict[str, str]) -> dict[str, str]:
    alice, bob = _bearer(keys["alice"]), _bearer(keys["bob"])
    data = npz(X=DIGITS.X[:300], y=DIGITS.y[:300])
    ds = client.post(DATASETS, files={"file": ("a.npz", data)}, headers=alice)
    assert ds.status_code == 201, ds.text
    ids = {"ds": ds.json()["id"]}
    theirs = client.post(DATASETS, files={"file": ("b.npz", data)}, headers=bob)
    ids["ds_b"] = theirs.json()["id"]
    training = baseline_spec(ids["ds"])
    job = client.post(JOBS, json=training, headers=alice | {"Idempotency-Key": "baseline"})
    assert job.status_code == 202, job.text
    ids["job"] = job.json()["id"]
    assert run_job(ctx, ids["job"]) == "succeeded"
    ids["model"] = client.get(f"/v1/jobs/{ids['job']}", headers=alice).json()["model_id"]
    url = f"/v1/models/{ids['model']}/batch-predictions"
    body = {"dataset": {"id": ids["ds"]}, "mc_samples": 5, "seed": 1}
    ids["batch"] = client.post(url, json=body, headers=alice).json()["id"]
    assert run_job(ctx, ids["batch"]) == "succeeded"
    ids["queued"] = client.post(url, json=body, headers=alice).json()["id"]  # never run
    return ids


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = _settings(tmp_path_factory.mktemp("hostile") / "data")
    upgrade_database(settings.resolved_database_url())
    app = create_app(settings)
    with app.state.session_factory() as session:
        keys = {name: create_key(session, name) for name in ("alice", "bob")}
        keys["revoked"] = create_key(session, "alice")
        session.flush()
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(keys["revoked"]))
            .values(revoked_at=utcnow())
        )
        session.commit()
    engine = make_engine(settings.resolved_database_url())
    ctx = WorkerContext(
        settings, make_session_factory(engine), LocalStore(settings.resolved_artifact_dir())
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        ids = _baseline(client, ctx, keys)
        yield Env(client, keys, ids, _snapshot(client, _bearer(keys["alice"]), ids))
    engine.dispose()


# --- The check every case passes --------------------------------------------------------------


def _headers(env: Env, c: Case) -> dict[str, str]:
    if c.who in env.keys:
        auth = _bearer(env.keys[c.who])
    elif c.who == "none":
        auth = {}
    else:
        auth = {"Authorization": c.who}
    return auth | dict(c.request.get("headers", {}))


def _resolved(value: Any, ids: dict[str, str]) -> Any:
    return value(ids) if callable(value) else value


def send(env: Env, c: Case) -> Any:
    kwargs = {k: _resolved(v, env.ids) for k, v in c.request.items() if k != "headers"}
    path = c.path.format(**env.ids) if "{" in c.path else c.path
    return env.client.request(c.method, path, headers=_headers(env, c), **kwargs)


def assert_answer(c: Case, r: Any, ids: dict[str, str]) -> None:
    assert r.status_code == c.status, r.text[:1000]
    assert r.status_code < 500
    assert len(r.content) <= SMALL_ANSWER or c.code is None, f"{len(r.content)} bytes answered"
    if c.code is None:
        if c.check is not None:
            c.check(r, ids)
        return
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    error = body["error"]
    assert error["code"] == c.code, error
    assert isinstance(error["message"], str) and isinstance(error["details"], list)
    assert all(set(d) == {"loc", "msg"} for d in error["details"]), error
    if c.loc is not None:
        assert c.loc in [d["loc"] for d in error["details"]], error
    if c.status == 422 and c.code == "validation_error":
        assert error["details"], "a 422 names the field at fault"


def assert_still_healthy(env: Env) -> None:
    started = time.monotonic()
    r = env.client.get("/healthz")
    assert r.status_code == 200 and time.monotonic() - started < 1.0
    now = _snapshot(env.client, _bearer(env.keys["alice"]), env.ids)
    for name, before in env.snapshot.items():
        assert now[name] == before, f"the baseline's {name} changed"


@pytest.mark.parametrize("c", ALL_CASES)
def test_hostile_request(env: Env, c: Case) -> None:
    r = send(env, c)
    assert_answer(c, r, env.ids)
    assert_still_healthy(env)


def test_the_suite_holds_enough_distinct_cases() -> None:
    ids = [p.id for p in ALL_CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 80


@pytest.mark.parametrize("name", ["alice:x", "Alice", "a/b", "-x", "a" * 65, "é"])
def test_tenant_names_that_could_collide_are_not_creatable(env: Env, name: str) -> None:
    with env.client.app.state.session_factory() as session, pytest.raises(TenantInvalid):  # type: ignore[attr-defined]
        create_key(session, name)
