"""The TensorBoard event files a training job's worker wrote (worker/training/tensorboard.py),
downloaded as one .tar.gz with the files in a folder named after the job."""

import os
import tarfile
import tempfile
from collections.abc import Iterator

from service.errors import NotFound
from service.storage import CHUNK, ArtifactStore


def event_files(store: ArtifactStore, job_id: str) -> list[str]:
    """The keys of the job's event files in the order TensorBoard reads them (404 when it has
    none)."""
    keys = store.list(f"jobs/{job_id}/tensorboard")
    files = [k for k in keys if k.rsplit("/", 1)[1].startswith("events.out.tfevents.")]
    if not files:
        raise NotFound(
            f"Job {job_id} has no TensorBoard event files: it has not finished an epoch yet, "
            "or its worker runs with KTS_TENSORBOARD=false."
        )
    return files


def archive(store: ArtifactStore, files: list[str], folder: str) -> Iterator[bytes]:
    """A gzipped tar of the artifacts `files` under `folder/`, in chunks; a file the worker
    replaces while it is read is taken as it was when opened (the store swaps whole files in)."""
    with tempfile.SpooledTemporaryFile(max_size=8 * CHUNK) as buffer:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for key in files:
                name = f"{folder}/{key.rsplit('/', 1)[1]}"
                try:
                    with store.local_file(key) as path, path.open("rb") as source:
                        info = tar.gettarinfo(arcname=name, fileobj=source)
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mode = 0o644
                        tar.addfile(info, source)
                except FileNotFoundError:  # the job was deleted meanwhile
                    continue
        buffer.seek(0, os.SEEK_SET)
        while chunk := buffer.read(CHUNK):
            yield chunk
