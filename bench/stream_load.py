"""What open event streams cost the database: N streams on running jobs, polled vs pushed.

For each mode (KTS_PROGRESS_PUSH=false: every stream reads its job every 0.25 s; true: epochs
pushed over Redis pub/sub): a fresh PostgreSQL database, `kts serve` on it with a Redis broker
(a unique queue: no worker runs), J jobs set running through the worker's own claim, N streams
opened on them (GET /v1/jobs/{id}/events), then for S seconds one epoch per job every second,
written and published exactly as a worker does at an epoch end. Prints the bench database's
transactions per second (pg_stat_database: every read of a job is one), the progress events
the streams received, and who used the CPU. Figures, never asserted.

    python bench/stream_load.py [--streams 1000] [--jobs 10] [--seconds 10]
"""

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import uuid

import httpx
from sqlalchemy import create_engine, text, update

sys.path.insert(0, os.path.dirname(__file__))
from pg_service import (  # noqa: E402
    ROOT,
    cpu_line,
    cpu_snapshot,
    cpu_used,
    drop_queue,
    fresh_database,
    make_keys,
    migrate,
    server_env,
    serving,
)
from submit_load import SPEC  # noqa: E402


def transactions(db_url: str) -> int:
    """Commits + rollbacks of the bench database so far (PostgreSQL flushes them ~every 1 s)."""
    name = db_url.rsplit("/", 1)[1]
    engine = create_engine(db_url.rsplit("/", 1)[0] + "/postgres")
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        n = conn.scalar(
            text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :n"),
            {"n": name},
        )
    engine.dispose()
    return int(n or 0)


async def _stream(port: int, key: str, job_id: str, counts: list[int], opened: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    try:
        await reader.readuntil(b"\r\n\r\n")
        opened[0] += 1
        while line := await reader.readline():
            if line.startswith(b"event: progress"):
                counts[0] += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _worker_epochs(ctx: object, jobs: list[str], owner: str, epoch: int) -> None:
    """One epoch end of every job, as worker/training/fitting.py `_progress` does it."""
    from service.jobs.progress import publish_epoch
    from service.rows import Job

    history = {"loss": [1.0 / (e + 1) for e in range(epoch)], "epoch_seconds": [1.0] * epoch}
    for job_id in jobs:
        with ctx.session_factory() as session:  # type: ignore[attr-defined]
            session.execute(
                update(Job).where(Job.id == job_id).values(epoch=epoch, history=history)
            )
            session.commit()
        publish_epoch(ctx.settings, job_id, epoch, 1000, history)  # type: ignore[attr-defined]


async def _run(
    base: str, key: str, db_url: str, ctx: object, jobs: list[str], opts: object, group: int
) -> str:
    port = int(base.rsplit(":", 1)[1])
    counts, opened = [0], [0]
    n = opts.streams  # type: ignore[attr-defined]
    tasks = [
        asyncio.create_task(_stream(port, key, jobs[i % len(jobs)], counts, opened))
        for i in range(n)
    ]
    while opened[0] < n:
        await asyncio.sleep(0.2)
    # warm-up: epoch 1 reaches every stream, so all have done their opening reads
    await asyncio.to_thread(_worker_epochs, ctx, jobs, "bench/1", 1)
    deadline = time.monotonic() + 60
    while counts[0] < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    counts[0] = 0
    seconds = opts.seconds  # type: ignore[attr-defined]
    before_tx, before_cpu, started = transactions(db_url), cpu_snapshot(group), time.perf_counter()
    for i in range(1, int(seconds) + 1):
        await asyncio.to_thread(_worker_epochs, ctx, jobs, "bench/1", i + 1)
        await asyncio.sleep(max(0.0, started + i - time.perf_counter()))
    await asyncio.sleep(1.5)  # the last events arrive; PostgreSQL flushes its counters
    elapsed = time.perf_counter() - started
    tx = transactions(db_url) - before_tx - len(jobs) * int(seconds)  # less the worker's writes
    cpu = cpu_line(cpu_used(before_cpu, cpu_snapshot(group)), elapsed)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    expected = n * int(seconds)
    return (
        f"database transactions of the API: {tx / elapsed:8.1f}/s   progress events received: "
        f"{counts[0]} of {expected}\n    {cpu}"
    )


def run_mode(push: bool, opts: argparse.Namespace) -> str:
    from service.db import make_session_factory
    from service.settings import Settings
    from service.storage import LocalStore
    from worker.context import WorkerContext
    from worker.jobs.lease import claim

    queue = f"kts-bench-{uuid.uuid4().hex[:8]}"
    with fresh_database() as db_url, tempfile.TemporaryDirectory() as artifacts:
        env = server_env(ROOT, db_url, queue, artifacts, KTS_PROGRESS_PUSH=str(push).lower())
        migrate(ROOT, env)
        key = make_keys(db_url, ["bench"])[0]
        settings = Settings(
            database_url=db_url, broker_url=env["KTS_BROKER_URL"], queue=queue, progress_push=push
        )
        engine = create_engine(db_url)  # no pre-ping: one transaction per epoch write
        ctx = WorkerContext(settings, make_session_factory(engine), LocalStore(artifacts))
        try:
            with serving(ROOT, env, []) as (base, group):
                headers = {"Authorization": f"Bearer {key}"}
                jobs = [
                    httpx.post(f"{base}/v1/jobs", json=SPEC, headers=headers).json()["id"]
                    for _ in range(opts.jobs)
                ]
                for job_id in jobs:
                    claim(ctx, job_id, "bench/1")
                return asyncio.run(_run(base, key, db_url, ctx, jobs, opts, group))
        finally:
            engine.dispose()
            drop_queue(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    opts = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the server inherits it too
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * opts.streams)), hard))
    print(
        f"{opts.streams} open event streams on {opts.jobs} running jobs, one epoch per job per "
        f"second for {opts.seconds:g} s; `kts serve` (1 process) on PostgreSQL + Redis, "
        f"{os.cpu_count()} cores shared by everything below"
    )
    for push in (False, True):
        label = "pushed (Redis pub/sub)" if push else "polled (every 0.25 s)"
        print(f"\n{label}\n  {run_mode(push, opts)}")


if __name__ == "__main__":
    main()
