"""What an upload may hold, and the checks every upload passes before it is stored: shapes,
dtypes, finite values, class labels. Features are converted in chunks of rows, so a
memory-mapped upload is never copied into memory whole."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets.arrays import Arrays
from service.errors import ErrorDetail, SpecInvalid
from service.storage import disk_full_as_storage_full

CHUNK_VALUES = 1024 * 1024  # values per chunk of rows when converting or checking X (4 MB)


def invalid(msg: str, loc: tuple[str | int, ...] = ("file",)) -> SpecInvalid:
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


def finish(
    X: np.ndarray, y: np.ndarray, class_names: list[str] | None, limits: Limits, scratch: Path
) -> Arrays:
    """Checked arrays: X float32 C-ordered (memory-mapped when it came so), y int64 classes or
    float32 targets."""
    return Arrays(features(X, len(y), limits, scratch), labels(y, limits), class_names)


def features(X: np.ndarray, n_labels: int, limits: Limits, scratch: Path) -> np.ndarray:
    if X.ndim < 2:
        raise invalid(
            f"Expected X with at least 2 dimensions (rows, features). "
            f"Received: shape {list(X.shape)}"
        )
    if len(X) != n_labels:
        raise invalid(
            f"Expected as many labels as rows. Received: {len(X)} rows, {n_labels} labels"
        )
    if len(X) < 2:
        raise invalid("Expected at least 2 rows.")
    if len(X) > limits.max_rows:
        raise invalid(f"Expected at most {limits.max_rows} rows. Received: {len(X)}")
    per_row = int(np.prod(X.shape[1:]))
    if per_row == 0:
        raise invalid("Expected at least one feature per row. Received: 0")
    if per_row > limits.max_features:
        raise invalid(f"Expected at most {limits.max_features} values per row.")
    if X.dtype.kind not in "fiub":  # complex, timedelta, datetime, strings, objects
        raise invalid(f"Expected numeric X. Received: dtype {X.dtype}")
    return _float32_c(X, max(1, CHUNK_VALUES // per_row), scratch)


def _float32_c(X: np.ndarray, rows: int, scratch: Path) -> np.ndarray:
    """X as float32 in C order, checked finite chunk by chunk (Fortran order is stored C)."""
    ready = X.dtype == np.float32 and X.flags.c_contiguous
    out = X if ready else _like(X, scratch)
    for start in range(0, len(X), rows):
        chunk = np.asarray(X[start : start + rows], dtype=np.float32)
        if not np.isfinite(chunk).all():
            raise invalid("Expected finite values in X: it holds NaN or infinity.")
        if not ready:
            out[start : start + rows] = chunk
    return out


def _like(X: np.ndarray, scratch: Path) -> np.ndarray:
    """An empty float32 C-ordered array shaped like X: on disk when X is memory-mapped.

    The file's blocks are reserved before it is mapped: a full disk then fails here, as
    StorageFull, instead of killing the process with SIGBUS when a write reaches the page."""
    if not isinstance(X, np.memmap):
        return np.empty(X.shape, dtype=np.float32)
    path = scratch / "X-float32.npy"
    header = {"shape": X.shape, "fortran_order": False, "descr": "<f4"}
    with disk_full_as_storage_full(), open(path, "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, header)
        fh.flush()
        os.posix_fallocate(fh.fileno(), fh.tell(), X.size * 4)
    return np.load(path, mmap_mode="r+", allow_pickle=False)


def labels(y: np.ndarray, limits: Limits) -> np.ndarray:
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise invalid("Expected integer labels as one value per row.")
        if len(y) and y.min() < 0:
            raise invalid("Expected class labels 0..K-1. Received: a negative label")
        if len(y) and int(y.max()) >= limits.max_classes:  # also uint64 past int64's range
            raise invalid(
                f"Expected class labels below {limits.max_classes} (KTS_MAX_CLASSES). "
                "Regression targets should be floats."
            )
        return np.ascontiguousarray(y, dtype=np.int64)
    if y.dtype.kind == "f":
        y = np.ascontiguousarray(y, dtype=np.float32)
        if not np.isfinite(y).all():
            raise invalid("Expected finite values in y: it holds NaN or infinity.")
        return y
    raise invalid(f"Expected numeric y. Received: dtype {y.dtype}")
