"""Which plots an object has, the numbers each is drawn from, and the artifact cache.

A plot is cached under `plots/<kind>/<id>/<name>-<hash>.<fmt>`, the hash covering the numbers it
is drawn from: a running job's plots are drawn again once a new epoch arrives, an ended job's are
served from the cache. Rendering happens on a cache miss only, a few at a time.
"""

import hashlib
import importlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.batch_predictions.service import get as get_batch
from service.errors import ApiError, ErrorDetail, NotFound
from service.jobs.schemas import upgraded
from service.jobs.service import get_job
from service.models.service import get_model
from service.plots.catalog import (
    BATCH_PLOTS,
    JOB_PLOTS,
    MODEL_PLOTS,
    batch_plots,
    job_plots,
    model_plots,
)
from service.rows import BatchPrediction, Job, JobDiagnostics
from service.storage import ArtifactStore

log = logging.getLogger(__name__)
RENDER_VERSION = 1  # part of every cache key: bump it when a drawing changes
CONCURRENCY = 2  # plots drawn at once per API process: rendering is CPU-bound
UNCERTAIN_ROWS = 12  # rows in the uncertain_rows plot
_slots = threading.BoundedSemaphore(CONCURRENCY)
RENDERERS = {
    "learning_curves": "service.plots.training",
    "gradient_health": "service.plots.training",
    "activation_saturation": "service.plots.training",
    "reliability": "service.plots.uncertainty",
    "entropy_histogram": "service.plots.uncertainty",
    "uncertain_rows": "service.plots.uncertainty",
}


class PlotNotFound(NotFound):
    """An unknown plot name, or one the object does not have (yet); lists those it has."""

    def __init__(self, what: str, name: str, known: tuple[str, ...], available: list[str]) -> None:
        if name in known:
            message = f"This {what} has no {name} plot yet."
        else:
            message = f"No plot is named {name[:64]!r}; a {what} has: {', '.join(known)}."
        now = ", ".join(available) if available else "none yet"
        super().__init__(message, [ErrorDetail(("name",), f"Available now: {now}.")])
        self.available = available


@dataclass(frozen=True)
class PlotRequest:
    """One plot of one object: where it is cached, what it is drawn from, how to load that."""

    folder: str
    name: str
    fingerprint: Any  # JSON data that fixes the drawing (the numbers, or what fixes them)
    load: Callable[[], dict[str, Any]]


def _check(what: str, name: str, known: tuple[str, ...], available: list[str]) -> None:
    if name not in available:
        raise PlotNotFound(what, name, known, available)


def _phases(job: Job) -> list[dict[str, Any]]:
    """The phases of a training job, labelled (frozen base or not, their learning rate)."""
    spec = upgraded(job) if job.kind == "train" else {}
    base = spec.get("base_model") or {}
    out = []
    for i, phase in enumerate(spec.get("phases") or []):
        freeze = phase.get("freeze_base")
        freeze = base.get("freeze", False) if freeze is None else freeze
        label = f"phase {i + 1}"
        if base:
            label += ": base frozen" if freeze else ": base trainable"
        if phase.get("learning_rate") is not None:
            label += f", lr {phase['learning_rate']:g}"
        out.append({"epochs": phase["epochs"], "label": label})
    return out


def _diagnostics(session: Session, job: Job) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(JobDiagnostics).where(JobDiagnostics.job_id == job.id).order_by(JobDiagnostics.epoch)
    )
    return [{"epoch": r.epoch, "layers": r.layers, "flags": r.flags} for r in rows]


def job_plot(session: Session, job_id: str, tenant: str, name: str) -> PlotRequest:
    """A job's plot: its history and phases, or its gradient-health records."""
    job = get_job(session, job_id, tenant)
    _check("job", name, JOB_PLOTS, job_plots(job))
    if name == "learning_curves":
        numbers = {"name": job.name, "history": job.history, "phases": _phases(job)}
    else:
        numbers = {"epochs": _diagnostics(session, job)}
        if not numbers["epochs"]:  # a resumed attempt may not have written one yet
            raise PlotNotFound("job", name, JOB_PLOTS, ["learning_curves"])
    return PlotRequest(f"plots/jobs/{job.id}", name, numbers, lambda: numbers)


def model_plot(session: Session, model_id: str, tenant: str, name: str) -> PlotRequest:
    """A model's reliability plot, drawn from its uncertainty block."""
    model = get_model(session, model_id, tenant)
    _check("model", name, MODEL_PLOTS, model_plots(model))
    numbers = dict(model.uncertainty or {})
    return PlotRequest(f"plots/models/{model.id}", name, numbers, lambda: numbers)


def batch_plot(
    session: Session, store: ArtifactStore, batch_id: str, tenant: str, name: str
) -> PlotRequest:
    """A batch prediction's plot; its results never change, so the summary fixes the drawing
    and the per-row numbers are read from the Parquet file on a cache miss only."""
    row, job = get_batch(session, batch_id, tenant)
    _check("batch prediction", name, BATCH_PLOTS, batch_plots(row, job.status))
    summary = dict(row.summary or {})
    fingerprint = {"results_key": row.results_key, "summary": summary, "k": UNCERTAIN_ROWS}
    if name == "entropy_histogram":
        return PlotRequest(
            f"plots/batch_predictions/{row.id}", name, fingerprint, lambda: _spread(store, row)
        )
    return PlotRequest(
        f"plots/batch_predictions/{row.id}", name, fingerprint, lambda: _most_uncertain(store, row)
    )


def _spread(store: ArtifactStore, row: BatchPrediction) -> dict[str, Any]:
    import pyarrow.parquet as pq

    assert row.results_key is not None and row.summary is not None
    measure = row.summary["uncertainty_measure"]
    outputs = "mean" if row.mc_samples else "prediction"
    with store.local_file(row.results_key) as path:
        table = pq.read_table(path, columns=[measure])
        first = pq.ParquetFile(path).read_row_group(0, columns=[outputs])
    return {
        "values": table.column(measure).to_numpy(),
        "measure": measure,
        "mc_samples": row.mc_samples,
        "n_classes": len(first.column(outputs)[0].as_py()) if first.num_rows else None,
    }


def _most_uncertain(store: ArtifactStore, row: BatchPrediction) -> dict[str, Any]:
    import pyarrow.parquet as pq

    assert row.results_key is not None and row.summary is not None
    measure = row.summary["uncertainty_measure"]
    ids = [u["row"] for u in row.summary["most_uncertain"][:UNCERTAIN_ROWS]]
    with store.local_file(row.results_key) as path:
        table = pq.read_table(path, filters=[("row", "in", ids)])
    by_row = {r["row"]: r for r in table.to_pylist()}
    records = [by_row[i] for i in ids if i in by_row]
    return {"records": records, "measure": measure, "mc_samples": row.mc_samples}


def cache_key(request: PlotRequest, fmt: str) -> str:
    payload = json.dumps(
        [RENDER_VERSION, request.name, request.fingerprint], sort_keys=True, default=str
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:20]
    return f"{request.folder}/{request.name}-{digest}.{fmt}"


def _cached(store: ArtifactStore, key: str) -> bytes | None:
    try:
        return store.read_bytes(key)
    except FileNotFoundError:
        return None


def image(store: ArtifactStore, request: PlotRequest, fmt: str) -> bytes:
    """The plot's bytes: from the cache, or drawn now (a few at a time) and cached."""
    key = cache_key(request, fmt)
    found = _cached(store, key)
    if found is not None:
        return found
    with _slots:
        found = _cached(store, key)  # drawn by another request while this one waited
        if found is not None:
            return found
        from service.plots.figures import encode

        draw = getattr(importlib.import_module(RENDERERS[request.name]), request.name)
        data = encode(draw(request.load()), fmt)
        try:
            store.put_bytes(key, data)
        except (OSError, ApiError):  # a full disk (StorageFull): a plot is served uncached
            log.warning("could not cache plot %s", key, exc_info=True)
            return data
    _drop_stale(store, request, key)
    return data


def _drop_stale(store: ArtifactStore, request: PlotRequest, key: str) -> None:
    """Older drawings of the same plot (earlier epochs of a job): only the latest is kept."""
    current = key.rsplit("/", 1)[1]
    suffix = current.rsplit(".", 1)[1]
    for other in store.list(request.folder):
        name = other.rsplit("/", 1)[1]
        if name != current and fnmatch(name, f"{request.name}-*.{suffix}"):
            store.delete(other)
