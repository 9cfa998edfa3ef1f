"""Uploads (.npz and .csv) parsed without pickle and checked for size, shape and finite values
before anything is stored."""

import csv
import io
import zipfile

import numpy as np

from service.datasets.arrays import Arrays
from service.errors import ErrorDetail, PayloadTooLarge, SpecInvalid


def _invalid(msg: str, loc: tuple[str | int, ...] = ("file",)) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(loc, msg)], msg)


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
