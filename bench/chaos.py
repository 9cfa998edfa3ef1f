"""Chaos run: the API and two prefork workers on PostgreSQL and Redis, N small jobs, workers
SIGKILLed mid-training and Redis restarted; prints jobs lost, duplicated and resumed.

Usage: python bench/chaos.py [--jobs 1000] [--kills 2] [--pg postgresql+psycopg://...]
(tests/test_chaos.py runs the same harness with 200 jobs and asserts the outcome).
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.rows import Job, TrainedModel  # noqa: E402

JOB = {
    "dataset": {"builtin": "iris"},
    "epochs": 4,
    "batch_size": 4,
    "validation_split": 0.2,
    "model": {
        "layers": [
            {"type": "dense", "units": 16, "activation": "relu"},
            {"type": "dropout", "rate": 0.1},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    },
    "uncertainty_samples": 10,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Private Redis, the API and named workers, as child processes with logs in `root`."""

    def __init__(self, root: Path, pg_url: str) -> None:
        self.root = root
        self.redis_port = free_port()
        self.api_port = free_port()
        self.kts = str(Path(sys.executable).parent / "kts")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KTS_")}
        self.env.update(
            KTS_DATABASE_URL=pg_url,
            KTS_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            KTS_DATA_DIR=str(root / "data"),
            KTS_REQUIRE_AUTH="false",
            KTS_QUEUE="chaos",
            KTS_LEASE_SECONDS="4",
            KTS_HEARTBEAT_SECONDS="1",
            KTS_RECONCILE_SECONDS="1",
            KTS_REQUEUE_AFTER_SECONDS="5",
            KTS_MAX_ATTEMPTS="6",
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=log, start_new_session=True
        )

    def kill(self, name: str, sig: int = signal.SIGKILL, group: bool = True) -> None:
        """Signal the process group (a SIGKILL takes the worker and its children), or only
        the main process, as `docker stop` does."""
        proc = self.procs.pop(name)
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=120)

    def start_redis(self) -> None:
        self.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        )
        for _ in range(100):
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(self.redis_port), "ping"], capture_output=True
                ).stdout.strip()
                == b"PONG"
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def up(self) -> str:
        self.start_redis()
        subprocess.run([self.kts, "migrate"], env=self.env, check=True, capture_output=True)
        self.start(
            "api", [self.kts, "serve", "--port", str(self.api_port), "--loglevel", "WARNING"]
        )
        base = f"http://127.0.0.1:{self.api_port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("api did not start")

    def worker(self, name: str) -> None:
        self.start(name, [self.kts, "worker", "--hostname", f"{name}@%h", "--loglevel", "WARNING"])

    def down(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM if name != "redis" else signal.SIGKILL)


def run_chaos(
    pg_url: str, n_jobs: int, kills: int = 2, timeout: float = 900, root: Path | None = None
) -> dict[str, Any]:
    root = root or Path(tempfile.mkdtemp(prefix="kts-chaos-"))
    cluster = Cluster(root, pg_url)
    engine = create_engine(pg_url)
    killed_jobs: list[str] = []
    try:
        base = cluster.up()
        workers = ["wa", "wb"]
        for name in workers:
            cluster.worker(name)
        with httpx.Client(timeout=30) as client:
            ids = [
                client.post(f"{base}/v1/jobs", json={**JOB, "seed": i}).json()["id"]
                for i in range(n_jobs)
            ]
        started = time.monotonic()
        generation = 0
        for k in range(kills):
            victim = workers[k % 2]
            job_id = _wait_for_running_job(engine, victim, started + timeout)
            cluster.kill(victim)  # SIGKILL the parent and its child mid-training
            killed_jobs.append(job_id)
            if k == 0:  # Redis loses every queued message
                cluster.kill("redis")
                time.sleep(1)
                cluster.start_redis()
            generation += 1
            replacement = f"{victim}{generation}"
            workers[k % 2] = replacement
            cluster.worker(replacement)
        while time.monotonic() - started < timeout:
            with engine.connect() as conn:
                open_jobs = conn.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.id.in_(ids), Job.status.in_(("queued", "running")))
                )
            if open_jobs == 0:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
        with engine.connect() as conn:
            statuses = Counter(
                r.status for r in conn.execute(select(Job.status).where(Job.id.in_(ids)))
            )
            models = Counter(
                r.job_id
                for r in conn.execute(
                    select(TrainedModel.job_id).where(TrainedModel.job_id.in_(ids))
                )
            )
            resumed = {
                r.id: r.resumed_from_epoch
                for r in conn.execute(
                    select(Job.id, Job.resumed_from_epoch).where(Job.id.in_(killed_jobs))
                )
            }
            attempts = Counter(
                r.attempts for r in conn.execute(select(Job.attempts).where(Job.id.in_(ids)))
            )
        return {
            "jobs": n_jobs,
            "seconds": round(elapsed, 1),
            "statuses": dict(statuses),
            "lost": n_jobs - sum(statuses[s] for s in ("succeeded", "failed", "cancelled")),
            "duplicated": sum(1 for c in models.values() if c > 1),
            "without_model": sum(1 for i in ids if models[i] == 0),
            "killed_jobs": killed_jobs,
            "resumed_from_epoch": resumed,
            "attempts": dict(attempts),
            "logs": str(root),
        }
    finally:
        cluster.down()
        engine.dispose()


def _wait_for_running_job(engine: Any, worker: str, deadline: float) -> str:
    """A job this worker is training, past its first epoch (so it has a checkpoint)."""
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(
                select(Job.id).where(
                    Job.status == "running", Job.lease_owner.like(f"{worker}@%"), Job.epoch >= 2
                )
            ).first()
        if row:
            return str(row.id)
        time.sleep(0.02)
    raise TimeoutError(f"no running job on {worker}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    name = f"kts_chaos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        result = run_chaos(
            args.pg.rsplit("/", 1)[0] + f"/{name}", args.jobs, args.kills, timeout=3600
        )
        for key, value in result.items():
            print(f"{key}: {value}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
