"""`kts serve --workers N`: N API processes on one port, the embedded worker started once, and
/metrics adding up the HTTP figures of all of them (service/metrics/multiprocess.py)."""

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.test_end_to_end import free_port, kts, wait_ready


def _group_commands(pgid: int) -> list[str]:
    """Command lines of the processes of one process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError):
            continue
    return found


def _writers(folder: Path) -> set[str]:
    """The process ids that have written request counters."""
    return {re.sub(r"\D", "", f.name) for f in folder.glob("counter_*.db")}


@pytest.mark.slow
def test_two_api_processes_one_embedded_worker_summed_metrics(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KTS_", "PROMETHEUS"))}
    env.update(KTS_LOG_LEVEL="WARNING", TMPDIR=str(tmp_path))  # the metrics folder lands here
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    command = [kts(), "serve", "--workers", "2", "--port", str(port), "--data-dir", "d"]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        wait_ready(base, tmp_path, timeout=120)  # the log is tmp_path/serve.log
        commands = _group_commands(server.pid)
        assert sum(" celery " in c for c in commands) == 1, commands  # the worker, once
        (folder,) = tmp_path.glob("kts-metrics-*")
        sent = 0
        # A new connection each: the kernel hands them to whichever process accepts first, so
        # send until both have answered (a busy machine can give one process a long run).
        while sent < 40 or len(_writers(folder)) < 2:
            assert sent < 2000, f"one process answered all {sent} requests"
            assert httpx.get(f"{base}/healthz").status_code == 200
            sent += 1
        text = httpx.get(f"{base}/metrics").text
        served = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("http_requests_total{") and 'handler="/healthz"' in line
        ]
        assert sum(served) == sent  # the sum over both processes, whichever answered
        assert "process_cpu_seconds_total" not in text  # per-process figures left out
        assert "kts_jobs{" in text  # the database figures stay
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert not list(tmp_path.glob("kts-metrics-*"))  # removed at the end
