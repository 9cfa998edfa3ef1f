"""A bounded local cache of downloaded artifacts, one folder per process, least recently used
files evicted first; a file handed out by `file()` is never evicted before its block ends.

Threads that miss the same file download it once: the first fetches, the others wait for it.
The cache folder may be a volume shared by processes in several containers (whose pids repeat):
each process holds an exclusive `flock` on the `lock` file in its own folder for as long as it
lives, and removes another folder only when it can take that lock (its process has ended)."""

import fcntl
import hashlib
import os
import re
import shutil
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from service.errors import Unavailable
from service.storage.base import disk_full_as_storage_full

LOCK = "lock"


@dataclass
class _Entry:
    path: Path
    size: int = 0
    pins: int = 1  # the thread that made it fetches it
    ready: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class FileCache:
    """Downloaded objects under `root/p<host>-<pid>-<random>/`, at most `max_bytes` of them per
    process beyond the files in use (a file larger than the bound is kept only while used)."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0
        self._pid = 0
        self._own: Path | None = None
        self._held: BinaryIO | None = None  # the open lock file of `_own`
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes of the cached files now."""
        return self._bytes

    @contextmanager
    def file(self, key: str, version: str, download: Callable[[Path], None]) -> Iterator[Path]:
        """The cached file of `key` at `version`, fetched by `download(path)` on a miss."""
        entry = self._acquire(key, version, download)
        try:
            yield entry.path
        finally:
            with self._lock:
                entry.pins -= 1
                self._evict()

    def _acquire(self, key: str, version: str, download: Callable[[Path], None]) -> _Entry:
        """The file's entry, pinned and on disk: fetched by this thread on a miss, or waited
        for while another thread fetches it."""
        while True:
            entry, fetch = self._claim(key, version)
            if fetch:
                self._fetch((key, version), entry, download)
                return entry
            entry.ready.wait()
            if not entry.failed:
                return entry
            # the fetching thread failed (and raised): try again, fetching it perhaps

    def _claim(self, key: str, version: str) -> tuple[_Entry, bool]:
        """The entry pinned, and whether this thread is the one to fetch it."""
        with self._lock:
            folder = self._folder()
            entry = self._entries.get((key, version))
            if entry is not None and entry.ready.is_set() and not entry.path.is_file():
                self._drop((key, version), entry)  # removed behind the cache's back
                entry = None
            if entry is not None:
                entry.pins += 1
                self._entries.move_to_end((key, version))
                return entry, False
            digest = hashlib.sha256(f"{key}\0{version}".encode()).hexdigest()[:32]
            # the key's own file name: Keras reads the format from the extension
            entry = _Entry(folder / digest / key.rsplit("/", 1)[-1])
            self._entries[(key, version)] = entry
            return entry, True

    def _fetch(
        self, name: tuple[str, str], entry: _Entry, download: Callable[[Path], None]
    ) -> None:
        try:
            size = _download(entry.path, download)
        except BaseException:
            with self._lock:
                entry.failed = True
                if self._entries.get(name) is entry:
                    del self._entries[name]
                entry.ready.set()
            raise
        with self._lock:
            entry.size = size
            self._bytes += size
            entry.ready.set()
            self._evict()

    def _evict(self) -> None:
        """Drop least recently used files not in use until the bound holds; under the lock."""
        for name, entry in list(self._entries.items()):
            if self._bytes <= self.max_bytes:
                return
            if entry.pins or not entry.ready.is_set():
                continue
            self._drop(name, entry)

    def _drop(self, name: tuple[str, str], entry: _Entry) -> None:
        del self._entries[name]
        self._bytes -= entry.size
        shutil.rmtree(entry.path.parent, ignore_errors=True)

    def _folder(self) -> Path:
        """This process's folder, made and locked at first use (a forked child makes its own
        and starts empty); called under the lock."""
        if self._own is None or self._pid != os.getpid():
            if self._held is not None:  # the parent's: closing this copy keeps its lock
                self._held.close()
            self._own, self._held = None, None
            self._entries.clear()
            self._bytes = 0
            with disk_full_as_storage_full():
                self.root.mkdir(parents=True, exist_ok=True)
                remove_dead_folders(self.root)
                self._own, self._held = _make_folder(self.root)
            self._pid = os.getpid()
        return self._own


def _make_folder(root: Path) -> tuple[Path, BinaryIO]:
    """A new folder for this process and its lock file, locked before the folder appears under
    its `p...` name: another process never sees it unlocked while this one lives."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    name = f"p{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = root / f".new-{name}"
    staging.mkdir()
    held = open(staging / LOCK, "wb")  # noqa: SIM115 (open for the process's lifetime)
    fcntl.flock(held, fcntl.LOCK_EX)
    os.rename(staging, root / name)
    return root / name, held


def remove_dead_folders(root: Path) -> None:
    """Folders left by processes that ended without cleaning up (killed workers): those whose
    lock nobody holds, on this host or another sharing the folder."""
    for folder in root.glob("p*"):
        if not folder.is_dir():
            continue
        try:
            lock = open(folder / LOCK, "rb")  # noqa: SIM115
        except FileNotFoundError:  # not one of ours, or one being removed
            shutil.rmtree(folder, ignore_errors=True)
            continue
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process lives
            shutil.rmtree(folder, ignore_errors=True)


def _download(path: Path, download: Callable[[Path], None]) -> int:
    """Fetch into a staging file, then move it to `path`: a reader never sees half a file."""
    staging = path.parent.parent / f".part-{uuid.uuid4().hex}"
    with disk_full_as_storage_full():
        try:
            download(staging)
            try:
                path.parent.mkdir(exist_ok=True)
                os.replace(staging, path)
                return path.stat().st_size
            except FileNotFoundError as exc:  # our folder went: not a missing artifact (404)
                raise Unavailable("The download cache lost a file: retry.") from exc
        finally:
            staging.unlink(missing_ok=True)
