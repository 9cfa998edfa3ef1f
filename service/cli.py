"""The `kts` command: `kts serve` (API, plus an embedded worker) and `kts worker`."""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from service.settings import Settings


def _worker_command(queues: str, pool: str, concurrency: int, loglevel: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "-Q",
        queues,
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]


def serve(args: argparse.Namespace) -> int:
    if args.data_dir:
        os.environ["KTS_DATA_DIR"] = str(Path(args.data_dir).resolve())
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    if (
        settings.database_url is None
    ):  # embedded: SQLite migrates itself; production has `kts migrate`
        from service.db import upgrade_database

        upgrade_database(settings.resolved_database_url())
    worker = None
    if settings.is_embedded_broker():
        # No broker server: a solo-pool worker in a child process shares the data folder.
        worker = subprocess.Popen(
            _worker_command(settings.queue, "solo", 1, args.loglevel), env=os.environ.copy()
        )
        print(
            f"kts: embedded worker started (pid {worker.pid}); data in {settings.data_dir}",
            flush=True,
        )
    import uvicorn

    from service.app import create_app

    try:
        uvicorn.run(
            create_app(settings), host=args.host, port=args.port, log_level=args.loglevel.lower()
        )
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def worker(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.is_embedded_broker():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command = _worker_command(
        args.queues or settings.queue, args.pool, args.concurrency, args.loglevel
    )
    os.execv(sys.executable, command)


def migrate(_args: argparse.Namespace) -> int:
    from service.db import upgrade_database

    upgrade_database(Settings().resolved_database_url())
    print("kts: database at the newest migration", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kts", description="Keras Training Service")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the API (and an embedded worker without a broker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None, help="folder for SQLite, artifacts and broker")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=serve)

    p = sub.add_parser("worker", help="start a Celery worker for the configured broker")
    p.add_argument("--queues", default=None, help="comma-separated queues (default: KTS_QUEUE)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=worker)

    p = sub.add_parser("migrate", help="bring the database to the newest migration")
    p.set_defaults(func=migrate)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
