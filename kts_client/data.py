"""Turning what users hold (arrays, DataFrames, files, specs) into request bodies."""

import io
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.spec import TrainingSpec

SpecLike = Mapping[str, Any] | str | os.PathLike[str] | TrainingSpec


def load_spec(spec: SpecLike) -> dict[str, Any]:
    """A training spec as the JSON object to send: from a dict, a JSON file or a TrainingSpec."""
    if isinstance(spec, TrainingSpec):
        return spec.model_dump(mode="json")
    if isinstance(spec, Mapping):
        return dict(spec)
    with Path(spec).open("rb") as f:
        loaded = json.load(f)
    if not isinstance(loaded, dict):
        raise ValueError(f"Expected a JSON object in {spec}. Received: {type(loaded).__name__}")
    return loaded


def is_dataframe(data: Any) -> bool:
    """True for a pandas DataFrame, recognised without importing pandas."""
    return type(data).__module__.startswith("pandas") and hasattr(data, "to_csv")


@contextmanager
def dataset_upload(data: Any, target: str | None) -> Iterator[tuple[str, IO[bytes]]]:
    """An upload's file name and stream: a path (streamed), arrays as .npz, a DataFrame as .csv."""
    # A DataFrame goes as CSV so that the service reads it as any CSV: `target` names the label
    # column and non-numeric labels become classes (with class_names).
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        with path.open("rb") as f:
            yield path.name, f
    elif is_dataframe(data):
        yield "data.csv", io.BytesIO(data.to_csv(index=False).encode())
    else:
        yield "data.npz", io.BytesIO(_npz(data))


def _npz(data: Any) -> bytes:
    if isinstance(data, Mapping) and "y" in data and ("X" in data or "x" in data):
        X, y = data.get("X", data.get("x")), data["y"]
    elif isinstance(data, tuple | list) and len(data) == 2:
        X, y = data
    else:
        raise TypeError(
            "Expected (X, y) arrays, a pandas DataFrame with target=, or a .npz/.csv path. "
            f"Received: type={type(data).__name__}"
        )
    buf = io.BytesIO()
    np.savez(buf, X=np.asarray(X), y=np.asarray(y))
    return buf.getvalue()


def as_rows(X: Any) -> np.ndarray:
    """Rows as a numeric array (a DataFrame or nested lists included)."""
    arr = np.asarray(X)
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        arr = arr.astype(np.float32)
    return arr


def npy_body(X: Any) -> bytes:
    """The rows as one .npy file (numpy.save, no pickle), the /predict binary body."""
    buf = io.BytesIO()
    np.save(buf, as_rows(X), allow_pickle=False)
    return buf.getvalue()
