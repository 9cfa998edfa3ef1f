"""The artifact store's interface: keys, atomic writes, reads through a real file, disk-full errors.

Two implementations live beside it: a local folder (`local.py`, the embedded default) and
S3-compatible object storage (`s3.py`); `service.storage.open_store(settings)` picks one.
"""

import errno
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from service.errors import StorageFull

CHUNK = 1024 * 1024  # bytes per read when artifacts are copied or streamed

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


class ArtifactKeyInvalid(ValueError):
    pass


def check_key(key: str) -> str:
    """The key itself when it names an artifact (no dot folders, no `..`), else an error."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ArtifactKeyInvalid(f"Invalid artifact key: {key!r}")
    return key


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """An OSError that says the disk (or the quota on it) is full; pyarrow's carry no errno."""
    if not isinstance(exc, OSError):
        return False
    return exc.errno in DISK_FULL or any(os.strerror(n) in str(exc) for n in DISK_FULL)


@contextmanager
def disk_full_as_storage_full() -> Iterator[None]:
    """Turn a full disk into StorageFull (507 in the API, `storage_full` for a job)."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise StorageFull(
            "The artifact storage is full: nothing was stored. Retry once space is freed."
        ) from exc


class ArtifactStore(ABC):
    """Artifacts under keys like `models/<id>/model.keras`; a written artifact appears whole
    or not at all. Reads that need a real file (memory maps, Keras, Parquet) go through
    `local_file`; a missing artifact raises FileNotFoundError."""

    @abstractmethod
    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A file to write the artifact into; it appears under `key` only when complete."""

    @abstractmethod
    def put_file(self, key: str, source: Path) -> None:
        """Store a copy of a local file under `key`."""

    @abstractmethod
    def local_file(self, key: str) -> AbstractContextManager[Path]:
        """A real file with the artifact's bytes, kept at least until the block ends (a memory
        map or an open handle made inside the block stays readable after it)."""

    @abstractmethod
    def reader(self, key: str) -> AbstractContextManager[BinaryIO]:
        """The artifact as a stream read from the start (reads only what is asked for)."""

    @abstractmethod
    def sized_reader(self, key: str) -> AbstractContextManager[tuple[BinaryIO, int]]:
        """The artifact as a stream and its length in bytes, both from one open (one GET): the
        length matches the bytes the stream gives even when the artifact is replaced meanwhile."""

    @abstractmethod
    def scratch(self) -> AbstractContextManager[Path]:
        """A private local folder for staging large files; removed afterwards."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def head_bytes(self, key: str, n: int) -> bytes:
        """The artifact's first `n` bytes (all of it when shorter), without reading the rest."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys under a key prefix (a folder), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an artifact; one that is not there is no error."""

    @abstractmethod
    def delete_tree(self, prefix: str) -> None:
        """Every artifact under a key prefix (a model's folder, a job's checkpoints)."""

    @abstractmethod
    def is_writable(self) -> bool:
        """The store answers and takes writes (the readiness check)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.writer(key) as fh:
            fh.write(data)
