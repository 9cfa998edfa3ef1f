"""The artifact store in S3-compatible object storage (AWS S3, MinIO, ...), through boto3.

Writes go to a local temp file first and are uploaded when complete (in parts past
`s3_part_size`): an object appears whole or not at all. Reads that need a real file are
downloaded into a bounded per-process cache (`FileCache`), checked against the object's ETag.
"""

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from service.errors import Unavailable
from service.settings import Settings
from service.storage.base import CHUNK, ArtifactStore, check_key, disk_full_as_storage_full
from service.storage.cache import FileCache

MISSING = ("404", "NoSuchKey", "NotFound")

log = logging.getLogger(__name__)


class _Replaced(Exception):
    """The object changed between its HEAD and its download."""


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` as ("bucket", "some/prefix/"); the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"Expected KTS_ARTIFACT_URL like s3://bucket/prefix. Received: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


@contextmanager
def s3_errors(name: str = "") -> Iterator[None]:
    """A missing object as FileNotFoundError; any other failure of the store (it does not
    answer, refuses, has no such bucket, breaks off a body) as Unavailable (503)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ClientError as exc:
        if error_code(exc) in MISSING:
            raise FileNotFoundError(errno.ENOENT, "No such object", name) from exc
        raise Unavailable(f"The artifact storage refused: {error_code(exc)}.") from exc
    except (BotoCoreError, S3UploadFailedError, HTTPError) as exc:
        raise Unavailable(f"The artifact storage does not answer: {type(exc).__name__}.") from exc


def error_code(exc: Any) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "404", "AccessDenied")."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def connect(settings: Settings) -> Any:
    """A boto3 S3 client for the settings' endpoint and credentials (thread-safe)."""
    import boto3
    from botocore.config import Config

    secret = settings.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,  # None: the usual AWS_* sources
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            # MinIO and most self-hosted servers want the bucket in the path
            s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        ),
    )


class S3Store(ArtifactStore):
    """Objects under `prefix` in one bucket; `cache` holds local copies for file reads."""

    def __init__(
        self, connect: Callable[[], Any], bucket: str, prefix: str, cache: FileCache, part: int
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.connect, self.bucket, self.prefix = connect, bucket, prefix
        self.cache = cache
        self.transfer = TransferConfig(
            multipart_threshold=part, multipart_chunksize=part, max_concurrency=4
        )
        self._client: tuple[int, Any] | None = None

    @property
    def client(self) -> Any:
        """A boto3 client per process: its connections must not cross a fork."""
        if self._client is None or self._client[0] != os.getpid():
            self._client = (os.getpid(), self.connect())
        return self._client[1]

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Store":
        assert settings.artifact_url is not None
        bucket, prefix = parse_url(settings.artifact_url)
        cache = FileCache(settings.resolved_cache_dir(), settings.cache_max_bytes)
        return cls(lambda: connect(settings), bucket, prefix, cache, settings.s3_part_size)

    def name(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        name = self.name(key)
        with self.scratch() as folder:
            path = folder / "upload"
            with disk_full_as_storage_full(), open(path, "wb") as fh:
                yield fh
            self._upload(path, name)  # only a complete file is uploaded

    def put_file(self, key: str, source: Path) -> None:
        self._upload(source, self.name(key))

    def _upload(self, source: Path, name: str) -> None:
        with s3_errors():  # multipart past the part size; an aborted upload leaves no object
            self.client.upload_file(str(source), self.bucket, name, Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        with s3_errors():
            self.client.put_object(Bucket=self.bucket, Key=self.name(key), Body=data)

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        parent = self.cache.root / "scratch"
        with disk_full_as_storage_full():
            parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=parent) as folder:
                yield Path(folder)

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        name = self.name(key)
        for _ in range(3):
            etag = self._head(name)["ETag"]
            held = ExitStack()
            try:
                path = held.enter_context(self.cache.file(key, etag, self._fetcher(name, etag)))
            except _Replaced:  # rewritten between the HEAD and the GET: look again
                continue
            with held:
                yield path
            return
        raise Unavailable(f"The artifact {key} is being rewritten: retry.")

    def _fetcher(self, name: str, etag: str) -> Callable[[Path], None]:
        return lambda path: self._download(name, etag, path)

    def _download(self, name: str, etag: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        with s3_errors(name):  # the body's read too: a stream can break off midway
            try:  # IfMatch: never cache new bytes under the old ETag
                got = self.client.get_object(Bucket=self.bucket, Key=name, IfMatch=etag)
            except ClientError as exc:
                if error_code(exc) in ("412", "PreconditionFailed"):
                    raise _Replaced from exc
                raise
            with got["Body"] as body, open(path, "wb") as fh:
                shutil.copyfileobj(body, fh, CHUNK)

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        with self.sized_reader(key) as (body, _):
            yield body

    @contextmanager
    def sized_reader(self, key: str, **extra: Any) -> Iterator[tuple[BinaryIO, int]]:
        name = self.name(key)
        with s3_errors(name):  # reads in the block too: a body can break off midway
            got = self.client.get_object(Bucket=self.bucket, Key=name, **extra)
            with got["Body"] as body:
                yield body, int(got["ContentLength"])

    def _head(self, name: str) -> dict[str, Any]:
        try:
            with s3_errors(name):
                return dict(self.client.head_object(Bucket=self.bucket, Key=name))
        except FileNotFoundError:  # a HEAD's 404 has no body: it may be the bucket missing
            if not self._bucket_answers():
                raise Unavailable(f"The artifact storage has no bucket {self.bucket}.") from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._head(self.name(key))
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(self.name(key))["ContentLength"])

    def read_bytes(self, key: str) -> bytes:
        with self.reader(key) as body:
            return body.read()

    def head_bytes(self, key: str, n: int) -> bytes:
        if n <= 0:
            return b""
        with self.sized_reader(key, Range=f"bytes=0-{n - 1}") as (body, _):
            return body.read()  # S3 sends the whole (shorter) object past its end

    def _names(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.name(prefix) + "/"
        )
        with s3_errors():
            for page in pages:
                yield from (item["Key"] for item in page.get("Contents", []))

    def list(self, prefix: str) -> list[str]:
        return sorted(name.removeprefix(self.prefix) for name in self._names(prefix))

    def delete(self, key: str) -> None:
        with s3_errors():
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))

    def delete_tree(self, prefix: str) -> None:
        names = list(self._names(prefix))
        for start in range(0, len(names), 1000):  # the most one request may delete
            batch = [{"Key": n} for n in names[start : start + 1000]]
            with s3_errors():
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if failed := answer.get("Errors"):  # Quiet: only the failures are listed
                first = failed[0]
                log.warning("%d objects under %s were not deleted: %s", len(failed), prefix, failed)
                raise Unavailable(
                    f"The artifact storage did not delete {len(failed)} objects under {prefix} "
                    f"({first.get('Key')}: {first.get('Code')}): retry."
                )

    def is_writable(self) -> bool:
        return self._bucket_answers()

    def _bucket_answers(self) -> bool:
        """The bucket exists and the store answers for it (the readiness check)."""
        try:
            with s3_errors():
                self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True
