"""Uploads (.npz and .csv) read from the received file, without pickle and with bounded memory,
and checked for size, shape and finite values before anything is stored."""

from pathlib import Path
from typing import IO

import numpy as np

from service.datasets.arrays import Arrays
from service.datasets.checks import Limits, finish, invalid
from service.datasets.csv_files import read_csv
from service.datasets.npz_files import read_npz

__all__ = ["Limits", "parse_upload"]


def parse_upload(
    fh: IO[bytes],
    filename: str,
    target: str | None,
    task: str | None,
    limits: Limits,
    scratch: Path,
) -> Arrays:
    """The checked arrays of an uploaded .npz or .csv (large arrays memory-mapped in scratch)."""
    head = fh.read(2)
    fh.seek(0)
    if filename.lower().endswith(".csv"):
        if not target:
            raise invalid("Expected the label column's name.", ("target",))
        X, labels, names = read_csv(fh, target)
        y, class_names = _csv_targets(labels, names, task)
        return finish(X, y, class_names, limits, scratch)
    if filename.lower().endswith(".npz") or head == b"PK":
        X, y = read_npz(fh, limits, scratch)
        arrays = finish(X, y, None, limits, scratch)
        if task == "regression":
            return Arrays(arrays.X, arrays.y.astype(np.float32))
        return arrays
    raise invalid("Expected a .npz or .csv file.")


def _csv_targets(
    labels: np.ndarray, class_names: list[str] | None, task: str | None
) -> tuple[np.ndarray, list[str] | None]:
    """Integer labels are classes unless the task says regression; strings are classes."""
    if class_names is not None:
        if task == "regression":
            raise invalid("Expected numeric targets for regression.", ("task",))
        return labels, class_names
    is_int = bool(np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))
    if task == "classification" and not is_int:  # numbers that are not integers: names
        values, codes = np.unique(labels, return_inverse=True)
        return codes.astype(np.int64), [f"{v:g}" for v in values]
    if (task or ("classification" if is_int else "regression")) == "classification":
        return labels.astype(np.int64), None
    return labels, None
