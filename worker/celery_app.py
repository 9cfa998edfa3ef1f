"""The Celery app of the workers: `celery -A worker.celery_app worker` (or `kts worker`).

TensorFlow is imported in each worker process after the fork (worker_process_init), never in
a prefork parent: a child hangs if its parent ran a TensorFlow op before forking.
The parent runs the reconciler (expired leases, lost messages) and, on SIGTERM, asks its
running jobs to checkpoint and hand themselves back.
"""

import logging
import os
import signal
import threading
from typing import Any

from celery.signals import (
    celeryd_init,
    setup_logging,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from service.queue import make_celery
from service.settings import get_settings

app = make_celery(get_settings())
app.conf.include = ["worker.tasks"]
log = logging.getLogger(__name__)
_node: dict[str, str] = {}


@setup_logging.connect
def _logging(loglevel: int | str | None = None, **_kwargs: object) -> None:
    """The service's log lines (JSON by default) instead of Celery's own format."""
    from service.logs.config import configure_logging

    settings = get_settings()
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(settings.log_format, str(level or settings.log_level))


@celeryd_init.connect
def _remember_node(sender: Any = None, **_kwargs: object) -> None:
    # before the pool forks: its children inherit the node name for their announcement
    _node["name"] = str(sender or "")
    if threading.current_thread() is threading.main_thread():  # (a worker started by `celery`)
        signal.signal(STOP_FAILED, _stop_failed)


STOP_FAILED = signal.SIGUSR2  # a prefork child asks its parent to stop (free in Celery)
_MAIN_PID = os.getpid()  # (prefork children inherit it)


def _stop_failed(*_args: object) -> None:
    """Stop this worker before its first job, exit status 1 (Celery's cold shutdown would
    exit 0)."""
    from celery.platforms import EX_FAILURE
    from celery.worker import state

    state.should_stop = EX_FAILURE


@worker_process_init.connect
def _init_process(**_kwargs: object) -> None:
    from inference.runtime import init_keras
    from worker.jobs.lease import hand_back_on_sigterm, worker_id
    from worker.presence import announce_soon, gpu_missing

    hand_back_on_sigterm()
    init_keras()
    if gpu_missing():
        if os.getpid() == _MAIN_PID:  # the solo pool: stop before consuming
            raise SystemExit(1)
        os.kill(_MAIN_PID, STOP_FAILED)
        os._exit(1)  # before its first job; the stopping parent waits for its children
    announce_soon(worker_id(_node.get("name") or None))


def _reconcile_forever(stop: threading.Event) -> None:
    from worker.context import worker_context
    from worker.jobs.reconcile import apply_retention, reconcile
    from worker.presence import touch

    ctx = worker_context()
    while not stop.wait(ctx.settings.reconcile_seconds):
        try:
            touch(ctx, _node.get("name", ""))
            counts = reconcile(ctx)
            counts["pruned"] = apply_retention(ctx)
            if any(counts.values()):
                log.info("reconciler: %s", counts)
        except Exception:  # database or broker down: try again next round
            log.warning("reconciler round failed", exc_info=True)


_stop_reconciler = threading.Event()


@worker_ready.connect
def _start_reconciler(sender: Any = None, **_kwargs: object) -> None:
    _node["name"] = getattr(sender, "hostname", "") or ""
    from celery.concurrency.prefork import TaskPool

    if not isinstance(getattr(sender, "pool", None), TaskPool):
        # solo and threads pools run jobs in this process (prefork children announce
        # themselves); importing the backend here is then safe
        from worker.jobs.lease import worker_id
        from worker.presence import announce_soon, gpu_missing

        if gpu_missing():  # (the threads pool; solo stopped at worker_process_init)
            raise SystemExit(1)
        announce_soon(worker_id(_node["name"] or None))
    threading.Thread(
        target=_reconcile_forever, args=(_stop_reconciler,), daemon=True, name="kts-reconciler"
    ).start()


@worker_shutting_down.connect
def _hand_back_jobs(**_kwargs: object) -> None:
    _stop_reconciler.set()
    node = _node.get("name")
    if not node:
        return
    from worker.context import worker_context
    from worker.jobs.lease import request_release

    try:
        count = request_release(worker_context(), node)
        log.warning("shutting down: %d running job(s) asked to checkpoint and hand back", count)
    except Exception:
        log.warning("could not ask running jobs to hand back", exc_info=True)
