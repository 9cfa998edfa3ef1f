"""Batch predictions: the checks of a request (before anything is queued) and the results.

The scoring itself runs on the workers (worker/batch_prediction.py); this module only reads the
Parquet file they write, with pyarrow (no Keras).
"""

import csv
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.batch_predictions.schemas import BatchPredictionCreate
from service.datasets.service import get_dataset
from service.errors import Conflict, ErrorDetail, NotFound, SpecInvalid
from service.jobs.service import new_job
from service.models.service import check_sampling
from service.plots.catalog import batch_plots
from service.rows import BatchPrediction, Job, TrainedModel
from service.settings import Settings


def create(
    session: Session,
    settings: Settings,
    model: TrainedModel,
    body: BatchPredictionCreate,
    tenant: str,
) -> BatchPrediction:
    """Add the job and its batch-prediction row; refused with 422 before anything is queued."""
    try:
        dataset = get_dataset(session, body.dataset.id, tenant)
    except NotFound:
        raise SpecInvalid([ErrorDetail(("dataset", "id"), "No data set has this id.")]) from None
    if list(dataset.input_shape) != list(model.input_shape):
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("dataset", "id"),
                    f"Expected rows of shape {list(model.input_shape)} for this model. "
                    f"Received: a data set of rows of shape {list(dataset.input_shape)}",
                )
            ]
        )
    check_sampling(model, settings, body.mc_samples, body.interval)
    job = new_job(
        session,
        tenant,
        f"batch prediction {model.id}",
        "batch_predict",
        body.model_dump(mode="json") | {"model_id": model.id},
        1,
    )
    row = BatchPrediction(
        id=job.id,
        tenant=tenant,
        model_id=model.id,
        dataset_id=dataset.id,
        mc_samples=body.mc_samples,
        seed=body.seed,
        interval=body.interval,
        rows=dataset.n_samples,
        rows_done=0,
    )
    session.add(row)
    session.flush()
    return row


def get(session: Session, batch_id: str, tenant: str) -> tuple[BatchPrediction, Job]:
    found = session.execute(
        select(BatchPrediction, Job)
        .join(Job, Job.id == BatchPrediction.id)
        .where(BatchPrediction.id == batch_id, BatchPrediction.tenant == tenant)
    ).first()
    if found is None:
        raise NotFound(f"No batch prediction has id {batch_id[:64]}.")
    return found[0], found[1]


def read(row: BatchPrediction, job: Job) -> dict[str, Any]:
    return {
        "id": row.id,
        "model_id": row.model_id,
        "dataset_id": row.dataset_id,
        "status": job.status,
        "progress": {"rows_done": row.rows_done, "rows": row.rows},
        "mc_samples": row.mc_samples,
        "seed": row.seed,
        "interval": row.interval,
        "summary": row.summary,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": row.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "plots": batch_plots(row, job.status),
    }


def _table(store: Any, row: BatchPrediction, job: Job) -> Any:
    if job.status != "succeeded" or row.results_key is None:
        raise Conflict(f"The results are not ready: the batch prediction is {job.status}.")
    import pyarrow.parquet as pq

    with store.local_file(row.results_key) as path:
        return pq.read_table(path)


def page(
    store: Any, row: BatchPrediction, job: Job, offset: int, limit: int, sort: str | None
) -> dict[str, Any]:
    """Stored per-row predictions, as the predict answer gives them, one JSON page."""
    table = _table(store, row, job)
    total = table.num_rows
    if sort:
        column, descending = sort.removeprefix("-"), sort.startswith("-")
        scalar = [
            name
            for name in table.column_names
            if pa.types.is_integer(table.schema.field(name).type)
            or pa.types.is_floating(table.schema.field(name).type)
        ]
        if column not in scalar:  # per-output lists (mean, std, ...) have no order
            raise SpecInvalid(
                [ErrorDetail(("sort",), f"Expected one of: {', '.join(scalar)} (or with -).")]
            )
        values = table.column(column).to_numpy()
        order = np.argsort(-values if descending else values, kind="stable")
        table = table.take(order[offset : offset + limit])
    else:
        table = table.slice(offset, limit)
    return {"predictions": table.to_pylist(), "offset": offset, "limit": limit, "total": total}


def csv_lines(store: Any, row: BatchPrediction, job: Job) -> Iterator[str]:
    """The results as CSV, one line per data-set row after a header; list columns flattened."""
    import pyarrow.parquet as pq

    _table(store, row, job)  # checks readiness
    with store.local_file(row.results_key) as path:
        parquet = pq.ParquetFile(path)  # its open handle reads on if the cached copy goes
    header: list[str] | None = None
    for batch in parquet.iter_batches(batch_size=4096):
        records = batch.to_pylist()
        if header is None and records:
            header = [
                f"{k}_{i}" if isinstance(v, list) else k
                for k, v in records[0].items()
                for i in (range(len(v)) if isinstance(v, list) else [0])
            ]
            buf = io.StringIO()
            csv.writer(buf).writerow(header)
            yield buf.getvalue()
        buf = io.StringIO()
        writer = csv.writer(buf)
        for record in records:
            writer.writerow(
                [x for v in record.values() for x in (v if isinstance(v, list) else [v])]
            )
        yield buf.getvalue()
