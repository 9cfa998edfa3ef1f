"""Artifacts as HTTP downloads: a local file is sent as it is, an object is streamed through."""

from collections.abc import Iterator
from contextlib import ExitStack
from typing import BinaryIO

from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from service.storage.base import CHUNK, ArtifactStore
from service.storage.local import LocalStore


def download(store: ArtifactStore, key: str, media_type: str, filename: str) -> Response:
    """The artifact as an attachment named `filename`."""
    if isinstance(store, LocalStore):
        return FileResponse(store.path(key), media_type=media_type, filename=filename)
    # streamed rather than a presigned redirect: the API's keys stay the only access control,
    # and clients need no route to the bucket
    held = ExitStack()
    # one GET, issued now: a missing object fails before the response starts, and the length
    # sent is that of the bytes streamed even when the object is replaced meanwhile
    body, size = held.enter_context(store.sized_reader(key))
    return StreamingResponse(
        _chunks(body, held),
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
        background=BackgroundTask(held.close),  # when the stream ends
    )


def _chunks(body: BinaryIO, held: ExitStack) -> Iterator[bytes]:
    try:
        while chunk := body.read(CHUNK):
            yield chunk
    finally:  # also when the client goes away (the generator is closed then)
        held.close()
