"""`kts serve`'s embedded worker: started again when it dies, and stopped with the server."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_end_to_end import free_port

BIN = Path(sys.executable).parent
SPEC = {
    "dataset": {"builtin": "iris"},
    "epochs": 2,
    "model": {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.5)


@pytest.mark.slow
def test_embedded_worker_restarts_and_stops_with_the_server(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env["KTS_BACKEND"] = os.environ.get("KTS_BACKEND", "jax")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [str(BIN / "kts"), "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        _wait(lambda: _ready(base), 120)
        _wait(lambda: len(_children(server.pid)) == 1, 30)
        (first,) = _children(server.pid)
        os.kill(first, signal.SIGKILL)  # the worker dies (OOM killer, crash)
        _wait(lambda: _children(server.pid) not in ([], [first]), 30)
        job = httpx.post(f"{base}/v1/jobs", json=SPEC).json()
        _wait(lambda: httpx.get(f"{base}/v1/jobs/{job['id']}").json()["status"] == "succeeded", 180)
        (second,) = _children(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert not Path(f"/proc/{second}").exists() or _zombie(second)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _zombie(pid: int) -> bool:
    return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
