"""Data sets: the scikit-learn built-ins and uploaded .npz/.csv files, as numpy arrays.

Uploads are parsed without pickle, checked for size, shape and finite values, and stored as
one .npz per data set (X float32, y float32 or int64).
"""

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from service.artifacts import ArtifactStore
from service.errors import ErrorDetail, PayloadTooLarge, SpecInvalid
from service.spec.plan import DatasetMeta
from service.spec.training import BUILTIN_DATASETS


@dataclass(frozen=True)
class Arrays:
    X: np.ndarray
    y: np.ndarray
    class_names: list[str] | None = None


def _invalid(msg: str, loc: tuple[str | int, ...] = ("file",)) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(loc, msg)], msg)


def describe(arrays: Arrays) -> DatasetMeta:
    """Infer task, classes and shapes: integer labels are classes, anything else regression."""
    X, y = arrays.X, arrays.y
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        return DatasetMeta(
            len(X),
            tuple(int(d) for d in X.shape[1:]),
            "classification",
            int(y.max()) + 1 if len(y) else 0,
        )
    output_dim = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
    return DatasetMeta(len(X), tuple(int(d) for d in X.shape[1:]), "regression", None, output_dim)


@lru_cache(maxsize=len(BUILTIN_DATASETS))
def load_builtin(name: str) -> Arrays:
    """Load a scikit-learn data set as it ships (digits is 0..16, not rescaled)."""
    from sklearn import datasets as skd  # imported lazily: about 1 s

    loaders = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
    }
    bunch = loaders[name]()
    X = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return Arrays(X, y, [str(c) for c in bunch.target_names])


def _finish(
    X: np.ndarray, y: np.ndarray, class_names: list[str] | None, max_rows: int, max_features: int
) -> Arrays:
    if X.ndim < 2:
        raise _invalid(
            f"Expected X with at least 2 dimensions (rows, features). "
            f"Received: shape {list(X.shape)}"
        )
    if len(X) != len(y):
        raise _invalid(f"Expected as many labels as rows. Received: {len(X)} rows, {len(y)} labels")
    if len(X) < 2:
        raise _invalid("Expected at least 2 rows.")
    if len(X) > max_rows:
        raise _invalid(f"Expected at most {max_rows} rows. Received: {len(X)}")
    if int(np.prod(X.shape[1:])) > max_features:
        raise _invalid(f"Expected at most {max_features} values per row.")
    if not np.issubdtype(X.dtype, np.number) or X.dtype == np.complex128:
        raise _invalid(f"Expected numeric X. Received: dtype {X.dtype}")
    X = X.astype(np.float32, copy=False)
    if not np.isfinite(X).all():
        raise _invalid("Expected finite values in X: it holds NaN or infinity.")
    if np.issubdtype(y.dtype, np.bool_):
        y = y.astype(np.int64)
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim != 1:
            raise _invalid("Expected integer labels as one value per row.")
        if y.min() < 0:
            raise _invalid("Expected class labels 0..K-1. Received: a negative label")
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
        if not np.isfinite(y).all():
            raise _invalid("Expected finite values in y: it holds NaN or infinity.")
    else:
        raise _invalid(f"Expected numeric y. Received: dtype {y.dtype}")
    return Arrays(X, y, class_names)


def parse_npz(data: bytes, max_rows: int, max_features: int, max_uncompressed: int) -> Arrays:
    """Read X/x and y from an .npz without pickle, after checking its uncompressed size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            # checked before numpy inflates anything: a small zip can hold gigabytes of zeros
            if sum(info.file_size for info in zf.infolist()) > max_uncompressed:
                raise PayloadTooLarge("The archive's uncompressed size exceeds the limit.")
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        names = set(npz.files)
        x_name = "X" if "X" in names else "x" if "x" in names else None
        if x_name is None or "y" not in names:
            raise _invalid(f"Expected arrays X (or x) and y. Received: {sorted(names)[:10]}")
        X, y = npz[x_name], npz["y"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        if isinstance(exc, SpecInvalid):
            raise
        raise _invalid(
            "Expected a readable .npz archive of plain arrays (no pickled objects)."
        ) from None
    return _finish(X, y, None, max_rows, max_features)


def parse_csv(
    data: bytes, target: str, task: str | None, max_rows: int, max_features: int
) -> Arrays:
    """Read a CSV with a header; `target` names the label column, the others must be numbers."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("Expected a UTF-8 CSV file.") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise _invalid("Expected a header row.")
    header = [h.strip() for h in header]
    if target not in header:
        raise _invalid(
            f"Expected the target column in the header. Received: target={target!r}"
            if len(target) < 100
            else "Expected the target column in the header.",
            ("target",),
        )
    t = header.index(target)
    features: list[list[float]] = []
    labels: list[str] = []
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise _invalid(f"Expected {len(header)} fields on line {n}. Received: {len(row)}")
        if len(features) >= max_rows:
            raise _invalid(f"Expected at most {max_rows} rows.")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != t])
        except ValueError:
            raise _invalid(f"Expected numbers in the feature columns (line {n}).") from None
        labels.append(row[t].strip())
    X = np.asarray(features, dtype=np.float64)
    class_names = None
    y: np.ndarray
    try:
        y_float = np.asarray([float(v) for v in labels], dtype=np.float64)
        is_int = bool(np.all(np.isfinite(y_float)) and np.all(y_float == np.round(y_float)))
        if task == "classification" and not is_int:
            raise ValueError
        if (task or ("classification" if is_int else "regression")) == "classification":
            y = y_float.astype(np.int64)
        else:
            y = y_float
    except ValueError:
        if task == "regression":
            raise _invalid("Expected numeric targets for regression.", ("task",)) from None
        class_names = sorted(set(labels))
        index = {c: i for i, c in enumerate(class_names)}
        y = np.asarray([index[v] for v in labels], dtype=np.int64)
    return _finish(X, y, class_names, max_rows, max_features)


def save_arrays(store: ArtifactStore, prefix: str, arrays: Arrays) -> None:
    """One plain .npy per array, so a reader can memory-map rows instead of loading them."""
    for name, array in (("X", arrays.X), ("y", arrays.y)):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        store.put_bytes(f"{prefix}/{name}.npy", buf.getvalue())


def row_count(store: ArtifactStore, prefix: str) -> int:
    with open(store.path(f"{prefix}/X.npy"), "rb") as fh:
        shape, _, _ = _npy_header(fh)
    return int(shape[0])


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)  # type: ignore[no-any-return]
    return np.lib.format.read_array_header_2_0(fh)  # type: ignore[no-any-return]


def iter_rows(store: ArtifactStore, prefix: str, chunk_rows: int) -> Iterator[np.ndarray]:
    """X in chunks of rows, read from the file (not memory-mapped): memory stays bounded by
    the chunk whatever the data set's size."""
    with open(store.path(f"{prefix}/X.npy"), "rb") as fh:
        shape, fortran, dtype = _npy_header(fh)
        if fortran:
            raise ValueError("expected a C-ordered array")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        while True:
            data = fh.read(chunk_rows * row_bytes)
            if not data:
                return
            yield np.frombuffer(data, dtype=dtype).reshape(-1, *shape[1:])


def load_arrays(store: ArtifactStore, prefix: str) -> Arrays:
    X = np.load(store.path(f"{prefix}/X.npy"), allow_pickle=False)
    y = np.load(store.path(f"{prefix}/y.npy"), allow_pickle=False)
    return Arrays(X, y)
