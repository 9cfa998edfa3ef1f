"""The TensorBoard event files a training job's worker wrote (worker/training/tensorboard.py),
downloaded as one .tar.gz with the files in a folder named after the job."""

import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from service.artifacts import ArtifactStore
from service.errors import NotFound

CHUNK = 1 << 20


def event_files(store: ArtifactStore, job_id: str) -> list[Path]:
    """The job's event files in the order TensorBoard reads them (404 when it has none)."""
    folder = store.path(f"jobs/{job_id}/tensorboard")
    files = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
    if not files:
        raise NotFound(
            f"Job {job_id} has no TensorBoard event files: it has not finished an epoch yet, "
            "or its worker runs with KTS_TENSORBOARD=false."
        )
    return files


def archive(files: list[Path], folder: str) -> Iterator[bytes]:
    """A gzipped tar of `files` under `folder/`, in chunks; a file the worker replaces while it
    is read is taken as it was when opened (the store swaps whole files in)."""
    with tempfile.SpooledTemporaryFile(max_size=8 * CHUNK) as buffer:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in files:
                try:
                    source = path.open("rb")
                except FileNotFoundError:  # the job was deleted meanwhile
                    continue
                with source:
                    info = tar.gettarinfo(arcname=f"{folder}/{path.name}", fileobj=source)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    tar.addfile(info, source)
        buffer.seek(0, os.SEEK_SET)
        while chunk := buffer.read(CHUNK):
            yield chunk
