"""Benchmark plumbing for the production setup: a fresh PostgreSQL database, a unique Redis queue
(no worker consumes it), `kts serve` started from a source tree, API keys made directly in the
database, and CPU seconds read from /proc (this machine has 2 cores: who used them matters).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get(
    "KTS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KTS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards."""
    name = f"kts_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(tree: Path, db_url: str, queue: str, artifacts: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
    env.update(
        PYTHONPATH=str(tree),
        KTS_DATABASE_URL=db_url,
        KTS_BROKER_URL=REDIS_URL,
        KTS_QUEUE=queue,
        KTS_ARTIFACT_DIR=artifacts,
        KTS_REQUIRE_AUTH="true",
        KTS_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def migrate(tree: Path, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def make_keys(db_url: str, tenants: list[str]) -> list[str]:
    """One API key per tenant, written directly (hashed as service/auth.py does)."""
    from service.auth import create_key
    from service.db import make_engine, make_session_factory

    engine = make_engine(db_url)
    with make_session_factory(engine)() as session:
        keys = [create_key(session, t) for t in tenants]
        session.commit()
    engine.dispose()
    return keys


@contextmanager
def serving(tree: Path, env: dict[str, str], args: list[str]) -> Iterator[tuple[str, int]]:
    """`kts serve ARGS` from `tree`; yields (base URL, pid of its process group)."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args],
            cwd=tree,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc, log)
            yield base, proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: object) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            log.seek(0)  # type: ignore[attr-defined]
            raise RuntimeError(f"kts serve exited: {log.read().decode()[-2000:]}")  # type: ignore[attr-defined]
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("kts serve did not become ready")


def drop_queue(queue: str) -> None:
    """Delete the bench's own Redis queue key (the messages nobody consumed)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(queue)
    client.close()


# --- CPU accounting from /proc ----------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[str, int, int, float]:
    """(comm, ppid, pgid, cpu seconds) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return comm, int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / TICK


def cpu_snapshot(group: int) -> dict[str, float]:
    """CPU seconds used so far: this bench, the kts server's process group, every postgres and
    redis-server process (others' included), and the whole machine (busy, from /proc/stat)."""
    out = {"bench": time.process_time(), "kts": 0.0, "postgres": 0.0, "redis": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm, _, pgid, cpu = _proc_stat(int(entry))
        except (OSError, ValueError, IndexError):
            continue
        if pgid == group:
            out["kts"] += cpu
        elif comm.startswith("postgres"):
            out["postgres"] += cpu
        elif comm.startswith("redis-server"):
            out["redis"] += cpu
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    out["machine"] = (sum(parts) - idle) / TICK
    return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def cpu_line(used: dict[str, float], seconds: float) -> str:
    """CPU use as cores busy over the phase; 'other' is the machine minus what is named."""
    named = sum(v for k, v in used.items() if k != "machine")
    cores = {k: v / seconds for k, v in used.items()}
    other = max(0.0, used["machine"] - named) / seconds
    return (
        f"cores busy: kts {cores['kts']:.2f}, postgres {cores['postgres']:.2f}, "
        f"redis {cores['redis']:.2f}, load generator {cores['bench']:.2f}, "
        f"other processes {other:.2f} (machine {cores['machine']:.2f} of {os.cpu_count()})"
    )


@contextmanager
def source_tree(ref: str | None) -> Iterator[Path]:
    """This checkout, or a read-only export of git REF (`git archive`: no git state changes)."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="kts-ref-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)
