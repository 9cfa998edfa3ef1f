"""Artifact store on a local folder; keys are checked so that none can escape it."""

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from service.errors import StorageFull

_KEY = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*$")


class ArtifactKeyInvalid(ValueError):
    pass


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


class ArtifactStore:
    """Files under one root folder, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ArtifactKeyInvalid(f"Invalid artifact key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ArtifactKeyInvalid(f"Invalid artifact key: {key!r}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.writer(key) as fh:
            fh.write(data)

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """A file to write the artifact into; it appears under `key` only when complete."""
        target = self.path(key)
        with disk_full_as_storage_full():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    yield fh
                os.replace(tmp, target)
            except BaseException:  # a half-written file never stays behind
                Path(tmp).unlink(missing_ok=True)
                raise

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private folder on the store's disk for staging large files; removed afterwards."""
        parent = self.root / ".scratch"  # no key starts with a dot: never served or listed
        with disk_full_as_storage_full():
            parent.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=parent) as folder:
                yield Path(folder)

    def put_file(self, key: str, source: Path) -> None:
        with self.writer(key) as fh, open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1024 * 1024)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        """Every artifact under a key prefix (a model's folder, a job's checkpoints)."""
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def is_writable(self) -> bool:
        return os.access(self.root, os.W_OK)
