"""Where artifacts live: a local folder (the embedded default) or S3-compatible object storage.
The interface every store implements is in `base.py`."""

from service.settings import Settings
from service.storage.base import (
    CHUNK,
    ArtifactKeyInvalid,
    ArtifactStore,
    check_key,
    disk_full_as_storage_full,
    is_disk_full,
)
from service.storage.local import LocalStore


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: KTS_ARTIFACT_URL=s3://bucket/prefix, else the folder."""
    if settings.artifact_url is None:
        return LocalStore(settings.resolved_artifact_dir())
    from service.storage.s3 import S3Store  # boto3 is imported only where it is used

    return S3Store.from_settings(settings)


__all__ = [
    "CHUNK",
    "ArtifactKeyInvalid",
    "ArtifactStore",
    "LocalStore",
    "check_key",
    "disk_full_as_storage_full",
    "is_disk_full",
    "open_store",
]
