"""Start a throw-away embedded service (`kts serve`) for a benchmark, or use --url."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def running_service(url: str | None = None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="kts-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
        kts = str(Path(sys.executable).parent / "kts")
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [kts, "serve", "--data-dir", tmp, "--port", str(port), "--loglevel", "WARNING"],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield base
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # requests still computing: do not wait for them
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_job(base: str, job_id: str, poll: float = 0.05) -> dict:
    while True:
        job = httpx.get(f"{base}/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(poll)
