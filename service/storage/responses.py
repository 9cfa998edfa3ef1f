"""Artifacts as HTTP downloads: a local file is sent as it is, an object is streamed through."""

from collections.abc import Iterator

from fastapi.responses import FileResponse, Response, StreamingResponse

from service.artifacts import ArtifactStore
from service.storage.local import LocalStore

CHUNK = 1024 * 1024


def download(store: ArtifactStore, key: str, media_type: str, filename: str) -> Response:
    """The artifact as an attachment named `filename`."""
    if isinstance(store, LocalStore):
        return FileResponse(store.path(key), media_type=media_type, filename=filename)
    # streamed rather than a presigned redirect: the API's keys stay the only access control,
    # and clients need no route to the bucket
    size = store.size(key)  # a missing object fails before the response starts
    return StreamingResponse(
        _chunks(store, key),
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


def _chunks(store: ArtifactStore, key: str) -> Iterator[bytes]:
    with store.reader(key) as body:
        while chunk := body.read(CHUNK):
            yield chunk
