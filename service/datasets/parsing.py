"""Uploads (.npz and .csv) parsed without pickle and checked for size, shape and finite values
before anything is stored."""

import csv
import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.datasets.arrays import Arrays
from service.errors import ErrorDetail, PayloadTooLarge, SpecInvalid


def _invalid(msg: str, loc: tuple[str | int, ...] = ("file",)) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(loc, msg)], msg)


@dataclass(frozen=True)
class Limits:
    """What an upload may hold (from the settings)."""

    max_rows: int
    max_features: int
    max_classes: int = 100_000
    max_uncompressed: int = 2 * 1024**3

    @classmethod
    def of(cls, settings: Any) -> "Limits":
        return cls(
            settings.max_rows,
            settings.max_features,
            settings.max_classes,
            settings.max_uncompressed_bytes,
        )


def _finish(X: np.ndarray, y: np.ndarray, class_names: list[str] | None, limits: Limits) -> Arrays:
    """Checked arrays, stored C-ordered as float32 X and int64 classes or float32 targets."""
    return Arrays(_features(X, len(y), limits), _labels(y, limits), class_names)


def _features(X: np.ndarray, n_labels: int, limits: Limits) -> np.ndarray:
    if X.ndim < 2:
        raise _invalid(
            f"Expected X with at least 2 dimensions (rows, features). "
            f"Received: shape {list(X.shape)}"
        )
    if len(X) != n_labels:
        raise _invalid(
            f"Expected as many labels as rows. Received: {len(X)} rows, {n_labels} labels"
        )
    if len(X) < 2:
        raise _invalid("Expected at least 2 rows.")
    if len(X) > limits.max_rows:
        raise _invalid(f"Expected at most {limits.max_rows} rows. Received: {len(X)}")
    features = int(np.prod(X.shape[1:]))
    if features == 0:
        raise _invalid("Expected at least one feature per row. Received: 0")
    if features > limits.max_features:
        raise _invalid(f"Expected at most {limits.max_features} values per row.")
    if X.dtype.kind not in "fiub":  # complex, timedelta, datetime, strings, objects
        raise _invalid(f"Expected numeric X. Received: dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)  # Fortran order or not, stored C-ordered
    if not np.isfinite(X).all():
        raise _invalid("Expected finite values in X: it holds NaN or infinity.")
    return X


def _labels(y: np.ndarray, limits: Limits) -> np.ndarray:
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise _invalid("Expected integer labels as one value per row.")
        if len(y) and y.min() < 0:
            raise _invalid("Expected class labels 0..K-1. Received: a negative label")
        if len(y) and int(y.max()) >= limits.max_classes:  # also uint64 past int64's range
            raise _invalid(
                f"Expected class labels below {limits.max_classes} (KTS_MAX_CLASSES). "
                "Regression targets should be floats."
            )
        return np.ascontiguousarray(y, dtype=np.int64)
    if y.dtype.kind == "f":
        y = np.ascontiguousarray(y, dtype=np.float32)
        if not np.isfinite(y).all():
            raise _invalid("Expected finite values in y: it holds NaN or infinity.")
        return y
    raise _invalid(f"Expected numeric y. Received: dtype {y.dtype}")


def parse_npz(data: bytes, limits: Limits) -> Arrays:
    """Read X/x and y from an .npz without pickle, after checking its uncompressed size."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            # checked before numpy inflates anything: a small zip can hold gigabytes of zeros
            if sum(info.file_size for info in zf.infolist()) > limits.max_uncompressed:
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
    return _finish(X, y, None, limits)


def _csv_rows(text: str, target: str, limits: Limits) -> tuple[list[list[float]], list[str]]:
    """Feature rows and label strings of a CSV with a header."""
    reader = csv.reader(io.StringIO(text, newline=""))
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
        if len(features) >= limits.max_rows:
            raise _invalid(f"Expected at most {limits.max_rows} rows.")
        try:
            features.append([float(v) for i, v in enumerate(row) if i != t])
        except ValueError:
            raise _invalid(f"Expected numbers in the feature columns (line {n}).") from None
        labels.append(row[t].strip())
    return features, labels


def parse_csv(data: bytes, target: str, task: str | None, limits: Limits) -> Arrays:
    """Read a CSV with a header; `target` names the label column, the others must be numbers."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _invalid("Expected a UTF-8 CSV file.") from None
    try:
        features, labels = _csv_rows(text, target, limits)
    except csv.Error as exc:  # a field over the size limit, a bare CR inside a field, ...
        where = f" (line {exc.line})" if hasattr(exc, "line") else ""
        raise _invalid(f"Expected a well-formed CSV file{where}: {str(exc)[:100]}") from None
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
    return _finish(X, y, class_names, limits)
