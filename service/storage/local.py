"""The artifact store on a local folder (the embedded default); keys cannot escape it."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from service.storage.base import (
    CHUNK,
    ArtifactKeyInvalid,
    ArtifactStore,
    check_key,
    disk_full_as_storage_full,
)


class LocalStore(ArtifactStore):
    """Files under one root folder, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The artifact's file (which may not exist); a key that would leave the root raises."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ArtifactKeyInvalid(f"Invalid artifact key: {key!r}")
        return path

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
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
        parent = self.root / ".scratch"  # no key starts with a dot: never served or listed
        with disk_full_as_storage_full():
            parent.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(dir=parent) as folder:
                yield Path(folder)

    def put_file(self, key: str, source: Path) -> None:
        with self.writer(key) as fh, open(source, "rb") as src:
            shutil.copyfileobj(src, fh, CHUNK)

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        yield self.path(key)  # the file itself: nothing to fetch

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        with open(self.path(key), "rb") as fh:
            yield fh

    @contextmanager
    def sized_reader(self, key: str) -> Iterator[tuple[BinaryIO, int]]:
        with open(self.path(key), "rb") as fh:
            yield fh, os.fstat(fh.fileno()).st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def head_bytes(self, key: str, n: int) -> bytes:
        with open(self.path(key), "rb") as fh:
            return fh.read(n)

    def list(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        found = (p for p in folder.rglob("*") if p.is_file())
        keys = (p.relative_to(self.root).as_posix() for p in found)
        return sorted(k for k in keys if not any(part.startswith(".") for part in k.split("/")))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def is_writable(self) -> bool:
        return os.access(self.root, os.W_OK)
