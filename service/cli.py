"""The `kts` command: `kts serve` (API, plus an embedded worker) and `kts worker`."""

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TypeAlias

from service.settings import Settings


def _worker_command(
    queues: str, pool: str, concurrency: int, loglevel: str, events: bool = False
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "--quiet",  # no banner on stdout: the log is JSON lines (service/logs/config.py)
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "-Q",
        queues,
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        *(["--task-events"] if events else []),
    ]


def _logging(settings: Settings, asked: str | None) -> str:
    """Turn on the process log (KTS_LOG_FORMAT, KTS_LOG_LEVEL or --loglevel); the level."""
    from service.logs.config import configure_logging

    level = (asked or settings.log_level).upper()
    configure_logging(settings.log_format, level)
    return level


def _uses_data_dir(settings: Settings) -> bool:
    """True when the SQLite file, the file-system broker or the artifacts live in data_dir.

    With all three external (production), `kts` creates nothing in the working directory.
    """
    return (
        settings.database_url is None
        or settings.is_embedded_broker()
        or (settings.artifact_dir is None and settings.artifact_url is None)
    )


def serve(args: argparse.Namespace) -> int:
    if args.data_dir:
        os.environ["KTS_DATA_DIR"] = str(Path(args.data_dir).resolve())
    settings = Settings()
    if _uses_data_dir(settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    checked = _with_auth(settings, args.host)
    if checked is None:
        return 2
    settings = checked
    level = _logging(settings, args.loglevel)
    # Embedded: SQLite migrates itself; production runs `kts migrate` once, before the API.
    from service.db import migration_behind, upgrade_database

    if settings.database_url is None:
        upgrade_database(settings.resolved_database_url())
    behind = migration_behind(settings.resolved_database_url())
    if behind is not None:
        print(
            f"kts: the database's schema is at migration {behind}: run `kts migrate` first.",
            file=sys.stderr,
        )
        return 2
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler the process would
    # die there and skip the `finally` below, leaving the embedded worker running. Turn it into
    # SystemExit so that the worker is stopped on every way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    worker = None
    try:
        if settings.is_embedded_broker():
            # No broker server: a solo-pool worker in a child process shares the data folder.
            queues = ",".join(_local_queues(settings))
            command = _worker_command(queues, "solo", 1, level, settings.task_events)
            worker = EmbeddedWorker(command)
            print(f"kts: embedded worker started; data in {settings.data_dir}", flush=True)
        _run_api(settings, args, level)
    finally:
        if worker is not None:
            worker.stop()
    return 0


def _run_api(settings: Settings, args: argparse.Namespace, level: str) -> None:
    """uvicorn with one API process, or with --workers N: N processes on one socket, each
    building its app from the environment (so what was resolved here is passed on there)."""
    import uvicorn

    from service.logs.config import logging_config

    workers = args.workers or settings.api_workers
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": level.lower(),
        "log_config": logging_config(settings.log_format, level),  # access lines too
    }
    if workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings), **options)
        return
    from service.metrics.multiprocess import shared_metrics_dir

    os.environ["KTS_REQUIRE_AUTH"] = "true" if settings.require_auth else "false"
    print(f"kts: {workers} API processes", flush=True)
    with shared_metrics_dir():  # /metrics adds up the HTTP figures of all N processes
        uvicorn.run("service.app:create_app", factory=True, workers=workers, **options)


class EmbeddedWorker:
    """The embedded worker process, started again when it dies (a crash, an OOM kill) until
    `kts serve` itself stops; its jobs resume from their checkpoints."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.stopping = threading.Event()
        self.process = subprocess.Popen(command, env=os.environ.copy())
        threading.Thread(target=self._watch, daemon=True, name="kts-worker-watch").start()

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            code = self.process.poll()
            if code is not None and not self.stopping.is_set():
                print(f"kts: embedded worker exited ({code}); starting it again", flush=True)
                self.process = subprocess.Popen(self.command, env=os.environ.copy())

    def stop(self) -> None:
        self.stopping.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _with_auth(settings: Settings, host: str) -> Settings | None:
    """Keys are required off loopback; None when the settings say otherwise there."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if settings.require_auth is False and not loopback:
        print(
            f"kts: refusing to serve on {host} without API keys: set "
            "KTS_REQUIRE_AUTH=true (or bind to 127.0.0.1).",
            file=sys.stderr,
        )
        return None
    if settings.require_auth is None:
        settings = settings.model_copy(update={"require_auth": not loopback})
    if settings.require_auth:
        print(
            "kts: API keys required (create one with `kts keys create --tenant NAME`)", flush=True
        )
    else:
        print(
            f"kts: WARNING: no API keys required: bound to loopback ({host}) only; "
            "every request acts as tenant 'default'",
            flush=True,
        )
    return settings


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def worker_command(
    args: argparse.Namespace, settings: Settings, accelerator: str = "cpu", devices: int = 1
) -> list[str]:
    """The Celery command line of `kts worker` (before --gpus splits it per device): it
    consumes the queues of its accelerator and device count (and `any` jobs' unless
    --no-take-any), or --queues."""
    from service.queue import worker_queues

    level = (args.loglevel or settings.log_level).upper()
    events = args.events or settings.task_events
    if events:  # the worker's app reads it too (service/queue.py), e.g. for its GPU children
        os.environ["KTS_TASK_EVENTS"] = "true"
    queues = args.queues or ",".join(worker_queues(settings, accelerator, devices, args.take_any))
    return _worker_command(queues, args.pool, args.concurrency, level, events)


def _local_queues(settings: Settings) -> list[str]:
    """The embedded worker's queues: what this host has, and `any` jobs."""
    from service.devices import host_devices
    from service.queue import worker_queues

    gpus = gpu_plan(None)
    accelerator = "gpu" if gpus else "cpu"
    return worker_queues(settings, accelerator, len(gpus) or host_devices(), True)


def _placement(args: argparse.Namespace) -> tuple[str, list[str], int] | str:
    """(accelerator, GPUs to start one child on per --gpus-per-worker, devices per worker
    process), or what is wrong with the flags."""
    from service.devices import host_devices, visible_gpus

    gpus = gpu_plan(args.gpus)
    if isinstance(gpus, str):  # what is missing for --gpus
        return gpus
    accelerator = args.accelerator or ("gpu" if gpus else "cpu")
    per = args.gpus_per_worker
    if accelerator == "cpu":
        if gpus:  # a CPU worker on a GPU host: hide the GPUs, so that it trains on CPU
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu", [], host_devices()
    if not gpus:  # a GPU the gpu extra does not drive (e.g. TensorFlow): one unpinned worker
        found = visible_gpus()
        return ("gpu", [], 1) if found else "--accelerator gpu: this host has no NVIDIA GPU."
    if per < 1 or len(gpus) % per:
        return f"--gpus-per-worker {per} does not divide the {len(gpus)} GPUs into workers."
    return "gpu", gpus, per


def worker(args: argparse.Namespace) -> int:
    settings = Settings()
    if _uses_data_dir(settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    placed = _placement(args)
    if isinstance(placed, str):
        print(f"kts: {placed}", file=sys.stderr)
        return 2
    accelerator, gpus, devices = placed
    command = worker_command(args, settings, accelerator, devices)
    if gpus:
        return _gpu_workers(command, gpus, args.hostname, devices)
    if args.hostname:
        command += ["-n", args.hostname]
    os.execv(sys.executable, command)


def gpu_plan(asked: str | None) -> list[str] | str:
    """The GPUs to run one worker child on each: [] for a CPU worker, or what is missing."""
    from service.devices import gpu_extra_installed, visible_gpus

    found = visible_gpus()
    if asked is None:  # default: every GPU of a GPU host that has the gpu extra
        return found if found and gpu_extra_installed() else []
    if asked == "none":
        return []
    if not found:
        return "--gpus: this host has no NVIDIA GPU (nvidia-smi lists none); start a CPU worker."
    if not gpu_extra_installed():
        return "--gpus: JAX's CUDA plugin is missing: pip install 'keras-training-service[gpu]'."
    wanted = found if asked == "all" else [g.strip() for g in asked.split(",") if g.strip()]
    unknown = [g for g in wanted if g not in found]
    if unknown:
        return f"--gpus: no GPU {', '.join(unknown)} on this host (it has {', '.join(found)})."
    return wanted


def _gpu_workers(command: list[str], gpus: list[str], hostname: str | None, per: int = 1) -> int:
    """One Celery worker per GPU (per `per` GPUs: its jobs may train on all of them), each
    pinned (CUDA_VISIBLE_DEVICES) before any backend import, so two jobs never share a
    device; SIGTERM and SIGINT are passed on to all."""
    children = []
    for group in (gpus[i : i + per] for i in range(0, len(gpus), per)):
        gpu = ",".join(group)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "KTS_BACKEND": "jax"}
        name = f"gpu{'-'.join(group)}@{hostname or '%h'}"
        child = [*command, "-n", name]
        child = [c for c in child if not c.startswith("--concurrency=")] + ["--concurrency=1"]
        children.append(subprocess.Popen(child, env=env))
        print(f"kts: worker {name} on GPU {gpu} (pid {children[-1].pid})", flush=True)

    def forward(signum: int, _frame: object) -> None:
        for proc in children:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(proc.wait() for proc in children)


def migrate(_args: argparse.Namespace) -> int:
    from service.db import upgrade_database

    upgrade_database(Settings().resolved_database_url())
    print("kts: database at the newest migration", flush=True)
    return 0


def keys(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from service.auth import TenantInvalid, create_key
    from service.db import make_engine, make_session_factory, upgrade_database
    from service.rows import ApiKey, utcnow

    settings = Settings()
    url = settings.resolved_database_url()
    if settings.database_url is None:
        upgrade_database(url)
    with make_session_factory(make_engine(url))() as session:
        if args.action == "create":
            try:
                key = create_key(session, args.tenant)
            except TenantInvalid as exc:
                print(f"kts: {exc}", file=sys.stderr)
                return 2
            session.commit()
            print(key)
        elif args.action == "list":
            for row in session.scalars(select(ApiKey).order_by(ApiKey.seq)):
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}  {row.tenant}  {row.prefix}...  {state}")
        else:
            key_row = session.scalar(select(ApiKey).where(ApiKey.id == args.key_id))
            if key_row is None:
                print("kts: no such key", file=sys.stderr)
                return 1
            key_row.revoked_at = utcnow()
            session.commit()
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return int(text)


Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    """The `kts` server commands and their flags."""
    parser = argparse.ArgumentParser(prog="kts", description="Keras Training Service")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_worker(sub)
    _add_keys(sub)
    p = sub.add_parser("migrate", help="bring the database to the newest migration")
    p.set_defaults(func=migrate)
    return parser


def _add_serve(sub: Subcommands) -> None:
    p = sub.add_parser("serve", help="start the API (and an embedded worker without a broker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=None, help="folder for SQLite, artifacts and broker")
    p.add_argument("--loglevel", default=None, help="default: KTS_LOG_LEVEL (INFO)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="API processes (default: KTS_API_WORKERS, 1); each keeps its own model cache",
    )
    p.set_defaults(func=serve)


def _add_worker(sub: Subcommands) -> None:
    p = sub.add_parser("worker", help="start a Celery worker for the configured broker")
    p.add_argument(
        "--queues",
        default=None,
        help="comma-separated queues, instead of those --accelerator and --take-any pick",
    )
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (one per GPU)")
    p.add_argument("--hostname", default=None, help="Celery node name, e.g. gpu0@%%h")
    p.add_argument(
        "--gpus",
        default=None,
        help="GPUs to train on, one worker process each: 0,1 | all | none "
        "(default: all on a host with NVIDIA GPUs and the gpu extra)",
    )
    p.add_argument(
        "--accelerator",
        default=None,
        choices=["gpu", "cpu"],
        help="the jobs it takes: resources.accelerator gpu or cpu (default: gpu where --gpus "
        "finds GPUs, else cpu)",
    )
    p.add_argument(
        "--take-any",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also take jobs whose resources.accelerator is any (default: on)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=int,
        default=1,
        help="GPUs per worker process: jobs with resources.devices up to it train on all of "
        "them, data parallel (default: 1)",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help="send Celery task events, for Flower (default: KTS_TASK_EVENTS)",
    )
    p.add_argument("--loglevel", default=None, help="default: KTS_LOG_LEVEL (INFO)")
    p.set_defaults(func=worker)


def _add_keys(sub: Subcommands) -> None:
    p = sub.add_parser("keys", help="manage API keys (stored hashed; shown once)")
    key_sub = p.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="create a key for a tenant and print it")
    create.add_argument("--tenant", required=True)
    key_sub.add_parser("list", help="list keys (id, tenant, prefix, state)")
    revoke = key_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    p.set_defaults(func=keys)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
