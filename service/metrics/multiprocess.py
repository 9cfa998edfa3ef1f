"""Metrics of `kts serve --workers N`: prometheus_client's multiprocess mode.

Each API process writes its counters and histograms (HTTP requests and latency, predictions,
the model cache) to files in one folder, PROMETHEUS_MULTIPROC_DIR, and GET /metrics, whichever
process answers it, adds up the files of all of them: the figures are those of the whole server,
not of the process that happened to answer. The cache gauges are summed over live processes
(each process has its own cache). The per-process CPU, memory and GC figures are left out in
this mode (prometheus_client cannot add them up). `kts serve` makes the folder for the run and
removes it afterwards; it must be set before prometheus_client is imported, which holds for the
API processes uvicorn spawns.
"""

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


@contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh folder for this run's metric files, in the environment of the API processes."""
    folder = tempfile.mkdtemp(prefix="kts-metrics-")
    os.environ[ENV] = folder
    try:
        yield folder
    finally:
        os.environ.pop(ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def collector_registry() -> object:
    """A registry that reads every process's files (the one GET /metrics exposes)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    pid = os.getpid()
    atexit.register(_mark_dead, pid)  # its live gauges stop counting when it exits
    return registry


def _mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    if enabled():
        multiprocess.mark_process_dead(pid)
