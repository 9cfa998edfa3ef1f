"""A real S3-compatible HTTP server for tests: moto's standalone server in a subprocess."""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from service.settings import Settings
from tests.test_end_to_end import free_port

KEY_ID, SECRET, REGION = "testing", "testing", "us-east-1"


@dataclass
class S3Server:
    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def new_bucket(self) -> str:
        name = f"kts-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def env(self, url: str) -> dict[str, str]:
        """The KTS_ variables that point a `kts` process at `url` on this server."""
        return {
            "KTS_ARTIFACT_URL": url,
            "KTS_S3_ENDPOINT_URL": self.endpoint,
            "KTS_S3_REGION": REGION,
            "KTS_S3_ACCESS_KEY_ID": KEY_ID,
            "KTS_S3_SECRET_ACCESS_KEY": SECRET,
        }

    def settings(self, url: str, data_dir: Path, **extra: Any) -> Settings:
        return Settings(
            data_dir=data_dir,
            artifact_url=url,
            s3_endpoint_url=self.endpoint,
            s3_region=REGION,
            s3_access_key_id=KEY_ID,
            s3_secret_access_key=SECRET,  # type: ignore[arg-type]
            **{"require_auth": False, **extra},
        )


@contextmanager
def moto_server(log: Path) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1, stopped afterwards."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=out,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.2)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
