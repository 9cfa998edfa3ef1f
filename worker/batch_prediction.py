"""Batch predictions on the workers: stream a stored data set through the same prediction
code as /predict, in chunks (memory stays bounded whatever the row count), write a Parquet
file, and summarise the uncertainty so the most uncertain rows can go to labelling first.
"""

import heapq
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from inference.sampler import Predictor
from inference.statistics import statistics
from service.datasets import arrays
from service.rows import BatchPrediction, Dataset, TrainedModel
from worker.context import WorkerContext
from worker.jobs.lifecycle import JobRun, runs

ROW_BUDGET = 4_000_000  # samples x outputs x rows per chunk
MAX_CHUNK_ROWS = 4096
RESERVOIR = 100_000  # values kept for the summary's quantiles (exact below this many rows)
MOST_UNCERTAIN = 100
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


class Summary:
    """Bounded-memory summary: class counts, quantiles from a reservoir, top-K uncertain."""

    def __init__(self, score_name: str, seed: int) -> None:
        self.score_name = score_name
        self.rows = 0
        self.counts: dict[int, int] = {}
        self.reservoirs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # values, random keys
        self.top: list[tuple[float, int]] = []
        self.rng = np.random.default_rng(seed)

    def add(self, rows: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        if "class" in columns:
            for k, c in zip(*np.unique(columns["class"], return_counts=True), strict=True):
                self.counts[int(k)] = self.counts.get(int(k), 0) + int(c)
        for name in ("predictive_entropy", "mutual_information", "uncertainty"):
            if name in columns:
                self._reservoir(name, columns[name])
        if self.score_name not in columns:  # plain regression: no uncertainty to rank by
            self.rows += len(rows)
            return
        for score, row in zip(columns[self.score_name], rows, strict=True):
            item = (float(score), -int(row))  # ties: the lower row id first
            if len(self.top) < MOST_UNCERTAIN:
                heapq.heappush(self.top, item)
            elif item > self.top[0]:
                heapq.heapreplace(self.top, item)
        self.rows += len(rows)

    def _reservoir(self, name: str, values: np.ndarray) -> None:
        """Bottom-k sampling: every value gets a random key and the smallest keys stay, a
        uniform sample of all values seen, in bounded memory."""
        kept, keys = self.reservoirs.get(name, (np.empty(0), np.empty(0)))
        kept = np.concatenate([kept, values])
        keys = np.concatenate([keys, self.rng.random(len(values))])
        if len(kept) > RESERVOIR:
            pick = np.argpartition(keys, RESERVOIR - 1)[:RESERVOIR]
            kept, keys = kept[pick], keys[pick]
        self.reservoirs[name] = (kept, keys)

    def result(self, mc_samples: int) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "mc_samples": mc_samples}
        if self.counts:
            out["class_counts"] = {str(k): v for k, v in sorted(self.counts.items())}
        for name, (values, _keys) in self.reservoirs.items():
            if len(values):
                qs = np.quantile(values, QUANTILES)
                out[name] = {
                    "mean": float(values.mean()),
                    "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, qs, strict=True)},
                }
        ranked = sorted(self.top, reverse=True)
        out["most_uncertain"] = [{"row": -row, self.score_name: score} for score, row in ranked]
        out["uncertainty_measure"] = self.score_name
        return out


def _columns(
    predictor: Predictor,
    X: np.ndarray,
    mc: int,
    seed: int | None,
    interval: float | None,
    task: str,
) -> dict[str, np.ndarray]:
    if mc == 0:
        out = predictor.predict(X).astype(np.float64)
        columns = {"prediction": out}
        if task == "classification":  # the plain softmax's own entropy
            stats = statistics(out[None], task)
            columns |= {"class": stats["class"], "predictive_entropy": stats["predictive_entropy"]}
        return columns
    columns = statistics(predictor.sample(X, mc, seed).astype(np.float64), task, interval)
    if task != "classification":
        columns["uncertainty"] = columns["std"].mean(axis=-1)
    return columns


def _arrow(rows: np.ndarray, columns: dict[str, np.ndarray]) -> pa.Table:
    data: dict[str, Any] = {"row": pa.array(rows, pa.int64())}
    for name, values in columns.items():
        if values.ndim == 2:
            data[name] = pa.array(list(values.astype(np.float32)), pa.list_(pa.float32()))
        elif name == "class":
            data[name] = pa.array(values, pa.int32())
        else:
            data[name] = pa.array(values, pa.float64())
    return pa.table(data)


@runs("batch_predict")
def run_batch_prediction(run: JobRun) -> str:
    ctx, job_id = run.ctx, run.job_id
    with ctx.session_factory() as session:
        row = session.scalar(select(BatchPrediction).where(BatchPrediction.id == job_id))
        assert row is not None
        model = session.scalar(select(TrainedModel).where(TrainedModel.id == row.model_id))
        dataset = session.scalar(select(Dataset).where(Dataset.id == row.dataset_id))
        assert model is not None and dataset is not None
    predictor = Predictor.load(ctx.store.path(model.artifact_key), model.task)
    outputs = max(1, model.n_classes or 1)
    chunk = int(max(1, min(MAX_CHUNK_ROWS, ROW_BUDGET // max(1, row.mc_samples * outputs))))
    partial = ctx.store.path(f"batch_predictions/{job_id}/partial-{os.getpid()}.parquet")
    partial.parent.mkdir(parents=True, exist_ok=True)
    score = "predictive_entropy" if model.task == "classification" else "uncertainty"
    summary = Summary(score, row.seed or 0)
    with run.watched():
        _score(run, predictor, row, model.task, dataset.artifact_key, chunk, partial, summary)
    if run.signal.reason is not None:  # no half results are ever marked complete
        partial.unlink(missing_ok=True)
        return run.stopped()
    key = f"batch_predictions/{job_id}/results.parquet"
    final = ctx.store.path(key)
    os.replace(partial, final)
    n = arrays.row_count(ctx.store, dataset.artifact_key)

    def results(session: Session) -> None:
        session.execute(
            update(BatchPrediction)
            .where(BatchPrediction.id == job_id)
            .values(rows_done=n, summary=summary.result(row.mc_samples), results_key=key)
        )

    outcome = run.succeed(add=results, epoch=1)
    if outcome != "succeeded":
        final.unlink(missing_ok=True)
    return outcome


def _score(
    run: JobRun,
    predictor: Predictor,
    row: BatchPrediction,
    task: str,
    data_key: str,
    chunk: int,
    partial: Any,
    summary: Summary,
) -> None:
    """Score the data set chunk by chunk into the partial Parquet file."""
    writer = None
    start = 0
    try:
        for index, rows_x in enumerate(arrays.iter_rows(run.ctx.store, data_key, chunk)):
            if run.signal.reason is not None:
                break
            X = rows_x.astype(np.float32, copy=False)
            rows = np.arange(start, start + len(X))
            chunk_seed = None if row.seed is None else row.seed + index
            columns = _columns(predictor, X, row.mc_samples, chunk_seed, row.interval, task)
            table = _arrow(rows, columns)
            if writer is None:
                writer = pq.ParquetWriter(partial, table.schema)
            writer.write_table(table)
            summary.add(rows, columns)
            start += len(X)
            _progress(run.ctx, run.job_id, start)
    finally:
        if writer is not None:
            writer.close()


def _progress(ctx: WorkerContext, job_id: str, rows_done: int) -> None:
    try:
        with ctx.session_factory() as session:
            session.execute(
                update(BatchPrediction)
                .where(BatchPrediction.id == job_id)
                .values(rows_done=rows_done)
            )
            session.commit()
    except Exception:  # progress is advisory; the database may be restarting
        pass
