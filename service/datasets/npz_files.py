""".npz uploads read with bounded memory: each array's .npy header (shape, dtype, order) is
checked before a byte of its data is inflated, the data is streamed into a scratch .npy file and
memory-mapped from there, so an upload never needs its arrays in memory at once.

numpy's own `np.load` on an archive inflates each member into memory first, and trusts the
shape in the header: a 600-byte archive claiming 10**15 elements makes it raise MemoryError.
"""

import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.datasets.arrays import npy_header
from service.datasets.checks import Limits, invalid
from service.errors import PayloadTooLarge
from service.storage import is_disk_full

CHUNK_BYTES = 1024 * 1024


def read_npz(fh: IO[bytes], limits: Limits, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """X (memory-mapped from `scratch`) and y of an archive holding X (or x) and y."""
    try:
        with zipfile.ZipFile(fh) as zf:
            members = {Path(i.filename).stem: i for i in zf.infolist() if not i.is_dir()}
            # checked before anything inflates: a small zip can hold gigabytes of zeros
            if sum(info.file_size for info in members.values()) > limits.max_uncompressed:
                raise PayloadTooLarge("The archive's uncompressed size exceeds the limit.")
            x_name = "X" if "X" in members else "x" if "x" in members else None
            if x_name is None or "y" not in members:
                names = sorted(members)[:10]
                raise invalid(f"Expected arrays X (or x) and y. Received: {names}")
            X = _stage(zf, members[x_name], "X", limits, scratch)
            y = np.array(_stage(zf, members["y"], "y", limits, scratch))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        if is_disk_full(exc):  # the scratch disk, not the archive: StorageFull (507) upstream
            raise
        raise invalid("Expected a readable .npz archive of plain arrays.") from None
    return X, y


def _stage(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: Limits, scratch: Path
) -> np.ndarray:
    """One member as a memory-mapped .npy in `scratch`, after its header passed the checks."""
    with zf.open(info) as stream:
        try:
            shape, fortran, dtype = npy_header(stream)
        except ValueError:
            raise invalid(f"Expected {name} as a plain .npy array.") from None
        data_bytes = _check_header(name, shape, dtype, limits)
        path = scratch / f"{name}.npy"
        with open(path, "wb") as out:
            header = {"shape": shape, "fortran_order": fortran, "descr": _descr(dtype)}
            np.lib.format.write_array_header_2_0(out, header)
            copied = _copy(stream, out, data_bytes)
    if copied != data_bytes:
        raise invalid(f"Expected {data_bytes} bytes of data in {name}. Received: {copied}")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _check_header(name: str, shape: tuple[int, ...], dtype: np.dtype[Any], limits: Limits) -> int:
    """The data size the header declares, once shape and dtype are acceptable."""
    if dtype.hasobject:
        raise invalid(f"Expected {name} as plain numbers: pickled objects are refused.")
    if dtype.kind not in "fiub":  # complex, timedelta, datetime, strings, void
        raise invalid(f"Expected numeric {name}. Received: dtype {dtype}")
    if shape and shape[0] > limits.max_rows:
        raise invalid(f"Expected at most {limits.max_rows} rows. Received: {shape[0]}")
    per_row = int(np.prod(shape[1:], dtype=object))
    if per_row > limits.max_features:
        raise invalid(f"Expected at most {limits.max_features} values per row in {name}.")
    data_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if data_bytes > limits.max_uncompressed:
        raise PayloadTooLarge(f"{name}'s declared size exceeds the uncompressed size limit.")
    return data_bytes


def _descr(dtype: np.dtype[Any]) -> Any:
    return np.lib.format.dtype_to_descr(dtype)


def _copy(source: IO[bytes], target: IO[bytes], limit: int) -> int:
    """Copy at most `limit` bytes in chunks; the count copied."""
    copied = 0
    while copied < limit:
        chunk = source.read(min(CHUNK_BYTES, limit - copied))
        if not chunk:
            break
        target.write(chunk)
        copied += len(chunk)
    return copied
