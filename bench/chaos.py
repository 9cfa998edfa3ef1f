"""Chaos run: the API and two prefork workers on PostgreSQL and Redis, N small jobs; a random
worker is SIGKILLed every few seconds for the whole run (and started again), Redis and
PostgreSQL are restarted once each and the artifact disk is filled once; prints jobs lost,
duplicated and resumed.

Usage: python bench/chaos.py [--jobs 1000] [--kill-every 5] [--system-pg]
(tests/test_chaos.py runs the same harness with fewer jobs and asserts the outcome).

PostgreSQL is a cluster of the run's own (initdb in a temporary folder, a free port), so its
restart disturbs no other client of this machine; `--system-pg` uses and restarts this machine's
Debian cluster (`pg_ctlcluster`) instead. The disk fill needs root (a tmpfs is mounted as the
artifact folder); without it the step is skipped and the result says why.
"""

import argparse
import glob
import os
import random
import shutil
import signal
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
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pg_service import free_port  # noqa: E402

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
ENDED = ("succeeded", "failed", "cancelled")


def postgres(action: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    """`pg_ctlcluster` on this machine's one Debian cluster (start, stop, status)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", *options, version, "main", action]
    return subprocess.run(command, capture_output=True, timeout=120)


def ensure_postgres() -> None:
    """Start the cluster if a run left it stopped (called in every `finally`)."""
    if os.path.isdir("/etc/postgresql") and postgres("status").returncode != 0:
        postgres("start")


class SystemPostgres:
    """This machine's Debian cluster, restarted in place: its other clients see it too."""

    def __init__(self, url: str) -> None:
        self.url = url

    def restart(self) -> dict[str, Any]:
        """Stop the cluster (fast: every connection dropped), keep it down 2 s, start it."""
        started = time.monotonic()
        stop = postgres("stop", "--mode=fast")
        time.sleep(2)
        start = postgres("start")
        seconds = round(time.monotonic() - started, 1)
        return {"rc": (stop.returncode, start.returncode), "seconds": seconds}

    def close(self) -> None:
        ensure_postgres()


def postgres_binaries() -> Path | None:
    """The folder of `initdb` and `pg_ctl` (Debian keeps them off the PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(folders[-1]).parent if folders else None


class PrivatePostgres:
    """A throw-away cluster: initdb in a temporary folder, served on a free port with fsync
    off, restarted without disturbing anyone. As root it runs as the `postgres` user (the
    server refuses root)."""

    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise RuntimeError("initdb not found: install PostgreSQL's server package")
        self.bin = binaries
        self.data = Path(tempfile.mkdtemp(prefix="kts-chaos-pg-"))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        init = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
        if init.returncode:
            raise RuntimeError(f"initdb failed: {init.stderr.decode()[-500:]}")
        self.start()

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, timeout=120)

    def start(self) -> subprocess.CompletedProcess[bytes]:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")
        return self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> subprocess.CompletedProcess[bytes]:
        return self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> dict[str, Any]:
        """Stop (fast: every connection dropped), keep it down 2 s, start again."""
        started = time.monotonic()
        stop = self.stop()
        time.sleep(2)
        start = self.start()
        seconds = round(time.monotonic() - started, 1)
        return {"rc": (stop.returncode, start.returncode), "seconds": seconds}

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs on `folder`; None when done, else why not."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    return f"mount failed: {done.stderr.decode().strip()}" if done.returncode else None


def fill_disk(folder: Path) -> Path:
    """A file taking every free byte of `folder`'s file system, to the last block."""
    filler = folder / ".filler"  # a dot name: never an artifact key
    with open(filler, "wb", buffering=0) as fh:
        stat = os.statvfs(folder)
        free = stat.f_bavail * stat.f_frsize
        if free > 1 << 20:
            os.posix_fallocate(fh.fileno(), 0, free - (1 << 20))
            fh.seek(0, os.SEEK_END)
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass  # ENOSPC: full
    return filler


class Cluster:
    """Private Redis, the API and named workers, as child processes with logs in `root`."""

    def __init__(self, root: Path, pg_url: str, artifacts: Path | None = None) -> None:
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
            # a cold worker under load can miss renewals for seconds: a 4 s lease let
            # healthy jobs be taken over again and again
            KTS_LEASE_SECONDS="12",
            KTS_HEARTBEAT_SECONDS="2",
            KTS_RECONCILE_SECONDS="1",
            KTS_REQUEUE_AFTER_SECONDS="5",
            KTS_MAX_ATTEMPTS="50",  # every few seconds a kill: attempts are not the limit here
        )
        if artifacts is not None:
            self.env["KTS_ARTIFACT_DIR"] = str(artifacts)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str]) -> None:
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own handle
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
        port = str(self.redis_port)
        no_disk = ["--save", "", "--appendonly", "no"]
        self.start("redis", ["redis-server", "--port", port, "--bind", "127.0.0.1", *no_disk])
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-p", port, "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def restart_redis(self) -> None:
        """Redis killed and started empty: every queued message is lost."""
        self.kill("redis")
        time.sleep(1)
        self.start_redis()

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


class Chaos:
    """One run's faults: a kill every `kill_every` seconds, and once each, as the jobs end,
    a Redis restart (at 20%), a PostgreSQL restart (45%) and a full disk (70%).

    A kill picks a random worker among the warm ones (a job has left its hands since it
    started): a fresh worker imports Keras and compiles for 10-30 s on a 2-core machine, so
    killing cold workers every few seconds would let no job end at all.
    """

    def __init__(
        self, cluster: Cluster, pg: "Postgres", ids: list[str], kill_every: float, seed: int
    ) -> None:
        self.cluster, self.pg, self.ids = cluster, pg, ids
        self.engine = create_engine(pg.url, pool_pre_ping=True)
        self.kill_every, self.rng = kill_every, random.Random(seed)
        self.workers = ["w0", "w1"]
        self.spawned = 2
        self.kills = self.skipped_ticks = 0
        self.warm: set[str] = set()
        self.running: dict[str, str] = {}  # job id -> the worker that held it at the last look
        self.killed: dict[str, int] = {}  # job id -> its epoch when its worker was killed
        self.events: dict[str, Any] = {}
        self.artifacts: Path | None = None  # set when the disk can be filled
        self.freed_open: list[str] = []  # jobs still open when the disk had space again

    def count(self, statuses: tuple[str, ...]) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.id.in_(self.ids), Job.status.in_(statuses))
                )
                or 0
            )

    def held_by(self, worker: str) -> list[Any]:
        """The jobs a (dead) worker was running, with their epochs; rides out a restart."""
        for _ in range(60):
            try:
                with self.engine.connect() as conn:
                    return list(
                        conn.execute(
                            select(Job.id, Job.epoch).where(
                                Job.status == "running", Job.lease_owner.like(f"{worker}@%")
                            )
                        ).all()
                    )
            except OperationalError:
                time.sleep(1)
        raise RuntimeError("the database stayed unavailable")

    def look(self) -> None:
        """Note the workers that have ended a job since the last look: they are warm (a job
        taken over after its lease lapsed says nothing of its first worker)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Job.id, Job.lease_owner).where(Job.status == "running"))
            now = {str(r.id): str(r.lease_owner).split("@")[0] for r in rows if r.lease_owner}
        for job_id, worker in self.running.items():
            if job_id not in now:
                self.warm.add(worker)
        self.running = now

    def kill_one(self) -> None:
        """SIGKILL a random warm worker (and its pool), note its jobs, start another."""
        warm = [w for w in self.workers if w in self.warm]
        if not warm:
            self.skipped_ticks += 1
            return
        victim = self.rng.choice(warm)
        self.cluster.kill(victim)
        self.kills += 1
        for row in self.held_by(victim):  # dead now: what it held is frozen
            self.killed[str(row.id)] = max(int(row.epoch), self.killed.get(str(row.id), 0))
        replacement = f"w{self.spawned}"
        self.spawned += 1
        self.workers[self.workers.index(victim)] = replacement
        self.cluster.worker(replacement)

    def restart_postgres(self) -> None:
        self.events["postgres_restart"] = self.pg.restart()

    def fill_disk(self, deadline: float) -> None:
        """Fill the artifact disk until a job has failed `storage_full`, then free it."""
        assert self.artifacts is not None
        failed_before = self.count(("failed",))
        filler = fill_disk(self.artifacts)
        started = time.monotonic()
        try:
            while time.monotonic() < min(deadline, started + 120):
                self.tick()
                try:
                    if self.count(("failed",)) > failed_before:
                        break
                except OperationalError:
                    pass
                time.sleep(0.2)
        finally:
            filler.unlink()
        with self.engine.connect() as conn:
            self.freed_open = [
                str(r.id)
                for r in conn.execute(
                    select(Job.id).where(
                        Job.id.in_(self.ids), Job.status.in_(("queued", "running"))
                    )
                )
            ]
        self.events["disk_full_seconds"] = round(time.monotonic() - started, 1)

    def tick(self) -> None:
        """A kill when one is due."""
        try:
            self.look()
        except OperationalError:
            return  # PostgreSQL restarting: look again on the next tick
        if time.monotonic() >= self.next_kill:
            self.kill_one()
            self.next_kill = time.monotonic() + self.kill_every

    def run(self, deadline: float) -> None:
        """Faults until every job has ended or the deadline passes."""
        self.next_kill = time.monotonic() + self.kill_every
        n = len(self.ids)
        while time.monotonic() < deadline:
            try:
                ended = self.count(ENDED)
            except OperationalError:  # PostgreSQL restarting: keep killing meanwhile
                ended = -1
            if ended == n:
                return
            self.tick()
            if ended >= 0.2 * n and "redis_restart" not in self.events:
                self.cluster.restart_redis()
                self.events["redis_restart"] = 1
            elif ended >= 0.45 * n and "postgres_restart" not in self.events:
                self.restart_postgres()
            elif ended >= 0.7 * n and "disk_full_seconds" not in self.events:
                if self.artifacts is not None:
                    self.fill_disk(deadline)
                else:
                    self.events["disk_full_seconds"] = None
            time.sleep(0.2)


Postgres = SystemPostgres | PrivatePostgres


def run_chaos(
    pg: Postgres,
    n_jobs: int,
    kill_every: float = 5.0,
    timeout: float = 900,
    root: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Submit `n_jobs`, run the faults until all have ended, and count what came of them."""
    root = root or Path(tempfile.mkdtemp(prefix="kts-chaos-"))
    artifacts = root / "artifacts"
    why_not = mount_tmpfs(artifacts, "1g")
    cluster = Cluster(root, pg.url, artifacts)
    chaos: Chaos | None = None
    try:
        base = cluster.up()
        with httpx.Client(timeout=30) as client:
            ids = [
                client.post(f"{base}/v1/jobs", json={**JOB, "seed": i}).json()["id"]
                for i in range(n_jobs)
            ]
        chaos = Chaos(cluster, pg, ids, kill_every, seed)
        chaos.artifacts = None if why_not else artifacts
        for name in chaos.workers:
            cluster.worker(name)
        started = time.monotonic()
        chaos.run(started + timeout)
        elapsed = time.monotonic() - started
        result = outcome(chaos.engine, ids, chaos)
        disk = chaos.events.get("disk_full_seconds")
        result.update(
            seconds=round(elapsed, 1),
            disk_full=f"skipped: {why_not}" if why_not else disk,
            logs=str(root),
        )
        return result
    finally:
        cluster.down()
        if chaos is not None:
            chaos.engine.dispose()
        if not why_not:
            subprocess.run(["umount", "-l", str(artifacts)], check=False)


def outcome(engine: Any, ids: list[str], chaos: Chaos) -> dict[str, Any]:
    """What the database holds after the run: statuses, model rows, resumed kills."""
    with engine.connect() as conn:
        columns = (Job.id, Job.status, Job.error, Job.model_id, Job.resumed_from_epoch)
        jobs = conn.execute(select(*columns, Job.attempts).where(Job.id.in_(ids))).all()
        models = conn.execute(select(TrainedModel.id, TrainedModel.job_id)).all()
    by_id = {str(j.id): j for j in jobs}
    per_job = Counter(str(m.job_id) for m in models)
    linked = {str(j.model_id) for j in jobs if j.model_id}
    statuses = Counter(j.status for j in jobs)
    # killed past epoch 2: a checkpoint was written (progress is recorded before it)
    checkpointed = [i for i, epoch in chaos.killed.items() if epoch >= 2]
    finished = [i for i in checkpointed if by_id[i].status == "succeeded"]
    return {
        "jobs": len(ids),
        "statuses": dict(statuses),
        "errors": dict(Counter((j.error or {}).get("code") for j in jobs if j.status == "failed")),
        "lost": len(ids) - sum(statuses[s] for s in ENDED),
        "duplicated": sum(1 for c in per_job.values() if c > 1),
        "orphan_models": sum(1 for m in models if str(m.id) not in linked),
        "failed_with_model": sum(
            1 for i in per_job if i not in by_id or by_id[i].status != "succeeded"
        ),
        "succeeded_without_model": sum(
            1 for j in jobs if j.status == "succeeded" and per_job[str(j.id)] != 1
        ),
        "kills": chaos.kills,
        "kill_ticks_skipped_no_warm_worker": chaos.skipped_ticks,
        "workers_started": chaos.spawned,
        "killed_jobs": len(chaos.killed),
        "killed_after_checkpoint": len(checkpointed),
        "resumed": sum(1 for i in finished if (by_id[i].resumed_from_epoch or 0) >= 1),
        "not_resumed": [i for i in finished if (by_id[i].resumed_from_epoch or 0) < 1],
        "attempts": dict(sorted(Counter(j.attempts for j in jobs).items())),
        "redis_restarts": chaos.events.get("redis_restart", 0),
        "postgres_restart": chaos.events.get("postgres_restart"),
        "succeeded_after_disk_freed": sum(
            1 for i in chaos.freed_open if by_id[i].status == "succeeded"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the run")
    parser.add_argument("--seed", type=int, default=0, help="which worker each kill picks")
    parser.add_argument(
        "--system-pg",
        metavar="URL",
        help="use (and restart) this machine's cluster at URL instead of a private one, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test (a database is made and dropped)",
    )
    args = parser.parse_args()
    if args.system_pg:
        run_on_system_postgres(args.system_pg, args)
        return
    pg = PrivatePostgres()
    try:
        report(run_chaos(pg, args.jobs, args.kill_every, args.timeout, seed=args.seed))
    finally:
        pg.close()


def run_on_system_postgres(admin_url: str, args: argparse.Namespace) -> None:
    name = f"kts_chaos_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    pg = SystemPostgres(admin_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        report(run_chaos(pg, args.jobs, args.kill_every, args.timeout, seed=args.seed))
    finally:
        pg.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def report(result: dict[str, Any]) -> None:
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
