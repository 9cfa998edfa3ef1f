"""Job, queue and worker figures, read from the database (and Redis) when /metrics is scraped.

Workers write everything about a job to the database (status, times, per-epoch history), so
the API reads the figures from there instead of each worker serving its own metrics. That works
with any number of worker hosts, needs no extra port per worker nor service discovery for them,
survives worker restarts (nothing lives in a worker's memory) and gives the same answer from
every API process. Readings are cached for KTS_METRICS_CACHE_SECONDS, so frequent scrapes from
several Prometheus servers do not load the database.
"""

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.jobs.kinds import JOB_KINDS
from service.jobs.service import TERMINAL
from service.queue_redis import is_redis, redis_client
from service.rows import Job, Worker
from service.settings import Settings
from service.workers.placement import Placement, live_since

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", *TERMINAL)
# Job run time: seconds for a tiny model, hours for a large one.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# kombu's Redis transport keeps a queue's messages of priority p > 0 in "<queue>\x06\x16<p>".
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)


def _seconds(session: Session) -> Any:
    """finished_at - started_at in seconds, as an SQL expression of this database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", Job.finished_at - Job.started_at)
    return (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0


def job_counts(session: Session) -> GaugeMetricFamily:
    """Jobs by status and kind; every pair is present, zero or not."""
    counts = dict.fromkeys(((s, k) for s in STATUSES for k in JOB_KINDS), 0)
    rows = session.execute(
        select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
    )
    for status, kind, n in rows:
        counts[(status, kind)] = n
    family = GaugeMetricFamily("kts_jobs", "Jobs by status and kind.", labels=["status", "kind"])
    for (status, kind), n in sorted(counts.items()):
        family.add_metric([status, kind], n)
    return family


def job_durations(session: Session) -> HistogramMetricFamily:
    """finished_at - started_at of every job that ran and ended, by kind and outcome: counts
    that only grow as jobs end, so rate() and histogram_quantile() work as on any histogram."""
    seconds = _seconds(session)
    buckets = [func.sum(case((seconds <= b, 1), else_=0)) for b in DURATION_BUCKETS]
    query = (
        select(Job.kind, Job.status, func.count(), func.sum(seconds), *buckets)
        .where(Job.status.in_(TERMINAL), Job.started_at.is_not(None), Job.finished_at.is_not(None))
        .group_by(Job.kind, Job.status)
    )
    family = HistogramMetricFamily(
        "kts_job_duration_seconds",
        "Run time (finished_at - started_at) of ended jobs, by kind and outcome.",
        labels=["kind", "outcome"],
    )
    for kind, outcome, count, total, *in_buckets in session.execute(query):
        points = [
            (str(float(b)), int(n or 0)) for b, n in zip(DURATION_BUCKETS, in_buckets, strict=True)
        ]
        family.add_metric(
            [kind, outcome], [*points, ("+Inf", int(count))], sum_value=float(total or 0)
        )
    return family


def epoch_figures(session: Session) -> list[Metric]:
    """Epochs run by all jobs (a counter), and the speed of the running ones now."""
    total = CounterMetricFamily("kts_epochs", "Epochs run by all jobs, by kind.", labels=["kind"])
    epochs = dict.fromkeys(JOB_KINDS, 0)
    for kind, n in session.execute(select(Job.kind, func.sum(Job.epoch)).group_by(Job.kind)):
        epochs[kind] = int(n or 0)
    for kind, n in sorted(epochs.items()):
        total.add_metric([kind], n)
    speed = 0.0
    for history in session.scalars(select(Job.history).where(Job.status == "running")):
        last = (history or {}).get("epoch_seconds") or [None]
        if last[-1]:
            speed += 1.0 / last[-1]
    rate = GaugeMetricFamily(
        "kts_epochs_per_second",
        "Sum over running jobs of 1 / the seconds of their last epoch (from the stored "
        "history's epoch_seconds): the training speed of the whole fleet now.",
        value=speed,
    )
    return [total, rate]


def live_workers(session: Session, settings: Settings) -> GaugeMetricFamily:
    """Worker processes seen within the window GET /v1/workers uses."""
    since = live_since(settings)
    n = session.scalar(select(func.count()).select_from(Worker).where(Worker.last_seen >= since))
    return GaugeMetricFamily("kts_workers", "Live worker processes.", value=n or 0)


def redis_depths(url: str, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue: LLEN of its key and its priority keys, all in
    one pipeline."""
    names = sorted(queues)
    with redis_client(url).pipeline(transaction=False) as pipe:
        for queue in names:
            for step in REDIS_PRIORITY_STEPS:
                pipe.llen(queue if step == 0 else f"{queue}\x06\x16{step}")
        lengths = [int(n) for n in pipe.execute()]
    steps = len(REDIS_PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(names)}


class JobCollector:
    """The figures above, read at most once per KTS_METRICS_CACHE_SECONDS. A database or Redis
    that does not answer drops its figures from the scrape and sets its kts_metrics_source_up
    to 0, instead of failing the HTTP and prediction metrics of this process with it."""

    def __init__(self, session_factory: Any, settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self._lock = threading.Lock()  # concurrent scrapes: one reads, the others wait for it
        self._read_at = float("-inf")
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.settings.metrics_cache_seconds:
                self._families = self._read()
                self._read_at = now
            return list(self._families)

    def _read(self) -> list[Metric]:
        families: list[Metric] = []
        up = GaugeMetricFamily(
            "kts_metrics_source_up",
            "1 when the last reading of this source (database, redis) succeeded, else 0.",
            labels=["source"],
        )
        queued: int | None = None
        base = self.settings.queue
        # the base queue, its gpu and cpu queues (a backlog is seen before any such worker
        # lives: autoscaling from zero), and every queue a live worker consumes
        queues = {base, f"{base}.gpu", f"{base}.cpu"}
        try:
            with self.session_factory() as session:
                jobs = job_counts(session)
                read = [jobs, job_durations(session), *epoch_figures(session)]
                read.append(live_workers(session, self.settings))
                live = Placement.read(session, self.settings).live_queues
            families += read  # all of them or none
            queues |= live
            queued = sum(int(s.value) for s in jobs.samples if s.labels["status"] == "queued")
            up.add_metric(["database"], 1)
        except Exception:  # the other figures of the scrape still count
            log.exception("metrics: the database could not be read")
            up.add_metric(["database"], 0)
        families.append(up)
        depth = self._queue_depth(up, queued, queues)
        if depth is not None:
            families.append(depth)
        return families

    def _queue_depth(
        self, up: GaugeMetricFamily, queued: int | None, queues: set[str]
    ) -> Metric | None:
        """Redis: the messages in each queue's list. Other brokers (the embedded one
        included): the jobs queued in the database, which every message stands for."""
        url, queue = self.settings.resolved_broker_url(), self.settings.queue
        depth = GaugeMetricFamily(
            "kts_queue_depth",
            "Tasks waiting in each Celery queue live workers consume, and the base, gpu and cpu "
            "queues "
            "(source: redis = LLEN of the queue's keys, database = jobs with status queued, "
            "all under the base queue).",
            labels=["queue", "source"],
        )
        if not is_redis(url):
            if queued is None:
                return None
            depth.add_metric([queue, "database"], queued)
            return depth
        try:
            for name, n in redis_depths(url, queues).items():
                depth.add_metric([name, "redis"], n)
            up.add_metric(["redis"], 1)
            return depth
        except Exception:
            log.exception("metrics: the Redis broker could not be read")
            up.add_metric(["redis"], 0)
            return None
