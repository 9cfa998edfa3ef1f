"""Data sets as numpy arrays: the scikit-learn built-ins, and stored uploads (one plain .npy
per array: X float32, y float32 or int64) read whole or in chunks of rows."""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from service.spec.plan import DatasetMeta
from service.spec.training import BUILTIN_DATASETS
from service.storage import ArtifactStore


@dataclass(frozen=True)
class Arrays:
    X: np.ndarray
    y: np.ndarray
    class_names: list[str] | None = None


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


def save_arrays(store: ArtifactStore, prefix: str, arrays: Arrays) -> None:
    """One plain .npy per array, so a reader can memory-map rows instead of loading them.
    Written straight to the file: a memory-mapped array is never copied into memory."""
    try:
        for name, array in (("X", arrays.X), ("y", arrays.y)):
            with store.writer(f"{prefix}/{name}.npy") as fh:
                np.save(fh, array, allow_pickle=False)
    except BaseException:  # a full disk after X: no half data set stays behind
        store.delete_tree(prefix)
        raise


HEADER_BYTES = 4096  # numpy pads a header to 64 bytes; 4 KiB holds any shape of a data set


def row_count(store: ArtifactStore, prefix: str) -> int:
    """The rows of X, from its .npy header alone (one ranged read)."""
    key = f"{prefix}/X.npy"
    try:
        shape, _, _ = npy_header(io.BytesIO(store.head_bytes(key, HEADER_BYTES)))
    except ValueError:  # a header longer than that (never written here): read on
        with store.reader(key) as fh:
            shape, _, _ = npy_header(fh)
    return int(shape[0])


def npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)  # type: ignore[no-any-return]
    return np.lib.format.read_array_header_2_0(fh)  # type: ignore[no-any-return]


def iter_rows(
    store: ArtifactStore, prefix: str, chunk_rows: int, start_row: int = 0
) -> Iterator[np.ndarray]:
    """X in chunks of rows from `start_row`, read from the file (not memory-mapped): memory
    stays bounded by the chunk whatever the data set's size."""
    with store.local_file(f"{prefix}/X.npy") as path, open(path, "rb") as fh:
        shape, fortran, dtype = npy_header(fh)
        if fortran:
            raise ValueError("expected a C-ordered array")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fh.seek(start_row * row_bytes, 1)
        while True:
            data = fh.read(chunk_rows * row_bytes)
            if not data:
                return
            yield np.frombuffer(data, dtype=dtype).reshape(-1, *shape[1:])


def load_arrays(store: ArtifactStore, prefix: str) -> Arrays:
    with store.local_file(f"{prefix}/X.npy") as path:
        X = np.load(path, allow_pickle=False)
    with store.local_file(f"{prefix}/y.npy") as path:
        y = np.load(path, allow_pickle=False)
    return Arrays(X, y)
