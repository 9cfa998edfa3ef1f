"""A bounded local cache of downloaded artifacts, one folder per process, least recently used
files evicted first; a file handed out by `file()` is never evicted before its block ends."""

import hashlib
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.artifacts import disk_full_as_storage_full


@dataclass
class _Entry:
    path: Path
    size: int
    pins: int = 0


class FileCache:
    """Downloaded objects under `root/p<pid>/`, at most `max_bytes` of them per process beyond
    the files in use (a file larger than the bound is kept only while used)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes of the cached files now."""
        return self._bytes

    @contextmanager
    def file(self, key: str, version: str, download: Callable[[Path], None]) -> Iterator[Path]:
        """The cached file of `key` at `version`, fetched by `download(path)` on a miss."""
        entry = self._pin(key, version) or self._fetch(key, version, download)
        try:
            yield entry.path
        finally:
            with self._lock:
                entry.pins -= 1
                self._evict()

    def _folder(self) -> Path:
        """This process's folder (a forked child starts empty); called under the lock."""
        if self._pid != os.getpid():
            self._pid, self._bytes = os.getpid(), 0
            self._entries.clear()
            self._remove_dead_folders()
            shutil.rmtree(self.root / f"p{self._pid}", ignore_errors=True)  # a reused pid's
        return self.root / f"p{self._pid}"

    def _remove_dead_folders(self) -> None:
        """Folders left by processes that ended without cleaning up (killed workers)."""
        if not self.root.is_dir():
            return
        for folder in self.root.glob("p*"):
            pid = folder.name[1:]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def _pin(self, key: str, version: str) -> _Entry | None:
        with self._lock:
            self._folder()
            entry = self._entries.get((key, version))
            if entry is not None:
                entry.pins += 1
                self._entries.move_to_end((key, version))
            return entry

    def _fetch(self, key: str, version: str, download: Callable[[Path], None]) -> _Entry:
        with self._lock:
            folder = self._folder()
        digest = hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()[:32]
        # the key's own file name: Keras reads the format from the extension
        path = folder / digest / key.rsplit("/", 1)[-1]
        staging = folder / f".part-{uuid.uuid4().hex}"
        with disk_full_as_storage_full():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                download(staging)
                path.parent.mkdir(exist_ok=True)
                os.replace(staging, path)  # a reader never sees half a file
            finally:
                staging.unlink(missing_ok=True)
        with self._lock:
            entry = self._entries.get((key, version))
            if entry is None:  # else another thread fetched the same bytes meanwhile
                entry = _Entry(path, path.stat().st_size)
                self._entries[(key, version)] = entry
                self._bytes += entry.size
            entry.pins += 1
            self._entries.move_to_end((key, version))
            self._evict()
            return entry

    def _evict(self) -> None:
        """Drop least recently used files not in use until the bound holds; under the lock."""
        for name, entry in list(self._entries.items()):
            if self._bytes <= self.max_bytes:
                return
            if entry.pins:
                continue
            del self._entries[name]
            self._bytes -= entry.size
            shutil.rmtree(entry.path.parent, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
