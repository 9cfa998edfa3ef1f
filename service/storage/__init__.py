"""Where artifacts live: a local folder (the embedded default) or S3-compatible object storage."""

from service.artifacts import ArtifactStore
from service.settings import Settings
from service.storage.local import LocalStore


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: KTS_ARTIFACT_URL=s3://bucket/prefix, else the folder."""
    if settings.artifact_url is None:
        return LocalStore(settings.resolved_artifact_dir())
    from service.storage.s3 import S3Store  # boto3 is imported only where it is used

    return S3Store.from_settings(settings)


__all__ = ["LocalStore", "open_store"]
