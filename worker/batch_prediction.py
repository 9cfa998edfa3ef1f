"""Batch predictions on the workers: stream a stored data set through the same prediction
code as /predict, in chunks (memory stays bounded whatever the row count), write a Parquet
file, and summarise the uncertainty so the most uncertain rows can go to labelling first.
"""

import heapq
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
from service.storage import ArtifactStore
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
    """Score the data set in chunks; a chunk already stored by an earlier attempt is kept."""
    ctx, job_id = run.ctx, run.job_id
    with ctx.session_factory() as session:
        row = session.scalar(select(BatchPrediction).where(BatchPrediction.id == job_id))
        assert row is not None
        model = session.scalar(select(TrainedModel).where(TrainedModel.id == row.model_id))
        dataset = session.scalar(select(Dataset).where(Dataset.id == row.dataset_id))
        assert model is not None and dataset is not None
    with ctx.store.local_file(model.artifact_key) as path:
        predictor = Predictor.load(path, model.task)
    outputs = max(1, model.n_classes or 1)
    chunk = int(max(1, min(MAX_CHUNK_ROWS, ROW_BUDGET // max(1, row.mc_samples * outputs))))
    score = "predictive_entropy" if model.task == "classification" else "uncertainty"
    summary = Summary(score, row.seed or 0)
    parts = Parts(ctx.store, job_id)
    done = parts.replay(summary)
    if done:
        run.log.info("resumed", f"resumed after {done} stored chunks", chunks=done)
    with run.watched():
        _score(run, predictor, row, model.task, dataset.artifact_key, chunk, parts, summary)
    if run.signal.reason is not None:  # no half results are ever marked complete
        outcome = run.stopped()
        if outcome == "cancelled":
            parts.clear()
        return outcome  # handed back or lost: the stored chunks wait for the next attempt
    key = f"batch_predictions/{job_id}/results.parquet"
    parts.merge(key)
    n = arrays.row_count(ctx.store, dataset.artifact_key)

    def results(session: Session) -> None:
        session.execute(
            update(BatchPrediction)
            .where(BatchPrediction.id == job_id)
            .values(rows_done=n, summary=summary.result(row.mc_samples), results_key=key)
        )

    outcome = run.succeed(add=results, epoch=1)
    if outcome == "succeeded":
        parts.clear()
    else:
        ctx.store.delete(key)
    return outcome


class Parts:
    """The scored chunks of one batch prediction, one Parquet file each, written whole (temp
    file + rename): a worker killed mid-chunk leaves the chunks before it, and the next attempt
    starts after them. The chunk size depends only on the model and the request, and chunk i's
    seed is `seed + i`, so a resumed run writes what an uninterrupted one would."""

    def __init__(self, store: ArtifactStore, job_id: str) -> None:
        self.store = store
        self.prefix = f"batch_predictions/{job_id}/parts"

    def key(self, index: int) -> str:
        return f"{self.prefix}/{index:06d}.parquet"

    def stored(self) -> int:
        """How many chunks in a row, from the first, are stored."""
        n = 0
        while self.store.exists(self.key(n)):
            n += 1
        return n

    def write(self, index: int, table: pa.Table) -> None:
        with self.store.writer(self.key(index)) as fh:
            pq.write_table(table, fh)

    def replay(self, summary: Summary) -> int:
        """Feed the stored chunks to the summary, in order; how many there were."""
        n = self.stored()
        for index in range(n):
            table = self.read(index)
            columns = {
                name: table.column(name).to_numpy()
                for name in table.column_names
                if name != "row" and not pa.types.is_list(table.schema.field(name).type)
            }
            summary.add(table.column("row").to_numpy(), columns)
        return n

    def merge(self, key: str) -> None:
        """The chunks as one results file, written whole."""
        n = self.stored()
        schema = self.read(0).schema if n else pa.schema([])
        with self.store.writer(key) as fh, pq.ParquetWriter(fh, schema) as out:
            for index in range(n):
                out.write_table(self.read(index))

    def read(self, index: int) -> pa.Table:
        with self.store.local_file(self.key(index)) as path:
            return pq.read_table(path)

    def clear(self) -> None:
        self.store.delete_tree(self.prefix)


def _score(
    run: JobRun,
    predictor: Predictor,
    row: BatchPrediction,
    task: str,
    data_key: str,
    chunk: int,
    parts: Parts,
    summary: Summary,
) -> None:
    """Score the chunks not stored yet, each into its own part."""
    first = parts.stored()
    start = first * chunk
    chunks = arrays.iter_rows(run.ctx.store, data_key, chunk, start_row=start)
    for index, rows_x in enumerate(chunks, start=first):
        if run.signal.reason is not None:
            break
        X = rows_x.astype(np.float32, copy=False)
        rows = np.arange(start, start + len(X))
        chunk_seed = None if row.seed is None else row.seed + index
        columns = _columns(predictor, X, row.mc_samples, chunk_seed, row.interval, task)
        parts.write(index, _arrow(rows, columns))
        summary.add(rows, columns)
        start += len(X)
        _progress(run.ctx, run.job_id, start)


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
