"""One training job, start to end: re-read the job, build, fit with callbacks, store the model.

A job's failure is always stored with a clear error; no path leaves it `running`.
"""

import logging
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sqlalchemy import delete, select, update

from service import datasets
from service.errors import ApiError
from service.jobs import TERMINAL, base_model_row, get_dataset
from service.models import Job, JobDiagnostics, TrainedModel, new_id, utcnow
from service.spec import TrainingSpec
from service.spec.plan import plan_model
from service.spec.training import BuiltinDataset, Phase
from worker.build import LOSSES, build_model, compile_model
from worker.callbacks import EpochRecorder, StopAtBatchEnd, StopSignal
from worker.context import WorkerContext
from worker.diagnostics import GradientHealth
from worker.optimizers import performance_callback
from worker.predict import Predictor
from worker.pruning import MagnitudePruning, sparsity_report
from worker.summary import has_dropout, model_summary
from worker.uncertainty import measure as measure_uncertainty

log = logging.getLogger(__name__)

DIVERGED_HINT = (
    "The loss became NaN or infinite: training diverged. Usual cures: a lower learning rate, "
    "gradient clipping (optimizer.clipnorm or clipvalue), batch normalisation, or another "
    "initialiser (he_normal with ReLU/ELU, lecun_normal with SELU)."
)
CANCEL_POLL_SECONDS = 0.5
PROBE_ROWS = 256  # rows of the fixed batch that gradient health is measured on


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _claim(ctx: WorkerContext, job_id: str) -> tuple[str, dict[str, Any]] | None:
    """Mark the job running; None when it is unknown, ended or cancelled (harmless redelivery)."""
    with ctx.session_factory() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.status in TERMINAL:
            return None
        if job.cancel_requested:
            job.status, job.finished_at = "cancelled", utcnow()
            session.commit()
            return None
        job.status, job.started_at = "running", utcnow()
        job.attempts += 1
        job.epoch, job.history, job.error, job.warnings = 0, {}, None, []
        session.execute(delete(JobDiagnostics).where(JobDiagnostics.job_id == job_id))
        session.commit()
        return job.kind, dict(job.spec)


def _finish(ctx: WorkerContext, job_id: str, **values: Any) -> None:
    with ctx.session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow(), **values))
        session.commit()


def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Run one job (train or optimize); returns its final status (or 'skipped')."""
    claimed = _claim(ctx, job_id)
    if claimed is None:
        return "skipped"
    kind, spec_data = claimed
    try:
        if kind == "optimize":
            from worker.optimize import run_optimize

            return run_optimize(ctx, job_id, spec_data)
        return _train(ctx, job_id, TrainingSpec.model_validate(spec_data))
    except JobFailed as exc:
        _finish(ctx, job_id, status="failed", error={"code": exc.code, "message": exc.message})
        return "failed"
    except ApiError as exc:  # the data set changed under a queued job, or a limit was hit
        _finish(
            ctx, job_id, status="failed", error={"code": exc.code, "message": exc.message[:1000]}
        )
        return "failed"
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(
            ctx,
            job_id,
            status="failed",
            error={"code": "training_error", "message": f"{type(exc).__name__}: {str(exc)[:1000]}"},
        )
        return "failed"


def load_arrays(ctx: WorkerContext, spec: TrainingSpec) -> datasets.Arrays:
    if isinstance(spec.dataset, BuiltinDataset):
        return datasets.load_builtin(spec.dataset.builtin)
    with ctx.session_factory() as session:
        key = get_dataset(session, spec.dataset.id).artifact_key
    return datasets.from_npz_bytes(ctx.store.read_bytes(key))


def split(n: int, fraction: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation indices (Keras's validation_split takes the last rows)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(n * fraction)
    return order[n_val:], order[:n_val]


def _targets(y: np.ndarray, loss: str, n_classes: int | None) -> np.ndarray:
    if loss == "categorical_crossentropy":
        return keras.utils.to_categorical(y, n_classes)
    if loss == "binary_crossentropy":
        return y.astype(np.float32)
    return y


def _watch_cancel(
    ctx: WorkerContext, job_id: str, signal: StopSignal, done: threading.Event
) -> None:
    while not done.wait(CANCEL_POLL_SECONDS):
        try:
            with ctx.session_factory() as session:
                if session.scalar(select(Job.cancel_requested).where(Job.id == job_id)):
                    signal.set("cancelled")
                    return
        except Exception:  # a database hiccup must not kill training
            log.warning("cancel watcher could not read job %s", job_id, exc_info=True)


def _train(ctx: WorkerContext, job_id: str, spec: TrainingSpec) -> str:
    started = time.monotonic()
    arrays = load_arrays(ctx, spec)
    meta = datasets.describe(arrays)
    s = ctx.settings
    base_model, base_layers = None, None
    if spec.base_model is not None:
        with ctx.session_factory() as session:
            row = base_model_row(session, spec, meta)
            assert row is not None
            base_layers, base_key = row.summary["layers"], row.artifact_key
        base_model = keras.saving.load_model(
            ctx.store.path(base_key), compile=False, safe_mode=True
        )
    plan = plan_model(
        spec,
        meta,
        max_units=s.max_units,
        max_layers=s.max_layers,
        max_epochs=s.max_epochs,
        base_layers=base_layers,
    )
    spec = plan.spec  # with its preset applied
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    train_idx, val_idx = split(meta.n_samples, spec.validation_split, spec.seed)
    X_train, X_val = arrays.X[train_idx], arrays.X[val_idx]
    y_all = _targets(arrays.y, plan.loss, meta.n_classes)
    y_train, y_val = y_all[train_idx], y_all[val_idx]
    has_val = len(val_idx) > 0

    normalize = spec.model.normalize_inputs and base_model is None
    model = build_model(plan, meta.input_shape, X_train if normalize else None, base_model)
    reused = model.layers[: sum(1 for layer in plan.layers if layer.type == "reused")]
    steps = math.ceil(len(X_train) / spec.batch_size)

    signal = StopSignal()
    history: dict[str, list[float | None]] = {}

    def report(epoch: int, hist: dict[str, list[float | None]]) -> None:
        with ctx.session_factory() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(epoch=epoch, history={k: list(v) for k, v in hist.items()})
            )
            session.commit()

    def report_health(
        epoch: int, layers: list[dict[str, Any]], found: list[dict[str, Any]]
    ) -> None:
        with ctx.session_factory() as session:
            session.add(JobDiagnostics(job_id=job_id, epoch=epoch, layers=layers, flags=found))
            if found:
                job = session.scalar(select(Job).where(Job.id == job_id))
                assert job is not None
                known = {w["code"] for w in job.warnings or []}
                new = [f for f in found if f["code"] not in known]
                if new:
                    job.warnings = [*(job.warnings or []), *new]
            session.commit()

    deadline = started + spec.max_runtime_seconds if spec.max_runtime_seconds else None
    probe = slice(0, min(PROBE_ROWS, len(X_train)))
    callbacks: list[keras.callbacks.Callback] = [
        GradientHealth(
            X_train[probe], y_train[probe], LOSSES.get(plan.loss, plan.loss), report_health
        ),
        EpochRecorder(history, signal, report),
        StopAtBatchEnd(signal, deadline),
    ]
    early_stopping = None
    if spec.early_stopping is not None:
        es = spec.early_stopping
        monitor = es.monitor if has_val else es.monitor.removeprefix("val_")
        early_stopping = keras.callbacks.EarlyStopping(
            monitor=monitor,
            patience=es.patience,
            min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights,
            mode="max" if monitor.removeprefix("val_") in ("accuracy", "auc") else "min",
        )
        callbacks.append(early_stopping)

    pruning = None
    if spec.pruning is not None:
        p = spec.pruning
        pruning = MagnitudePruning(
            p.target_sparsity,
            p.begin_epoch * steps,
            (p.end_epoch or plan.epochs) * steps,
            p.frequency,
        )
        callbacks.append(pruning)  # last: it re-applies its masks after early stopping

    done = threading.Event()
    watcher = threading.Thread(target=_watch_cancel, args=(ctx, job_id, signal, done), daemon=True)
    watcher.start()
    try:
        epochs_done = 0
        for phase in phases(spec):
            freeze = phase.freeze_base
            if freeze is None:
                freeze = spec.base_model.freeze if spec.base_model else False
            for layer in reused:
                layer.trainable = not freeze
            phase_spec = spec
            if phase.learning_rate is not None:
                optimizer = spec.optimizer.model_copy(update={"learning_rate": phase.learning_rate})
                phase_spec = spec.model_copy(update={"optimizer": optimizer, "lr_schedule": None})
            # a new optimizer and a compile for every phase: Keras fixes which weights
            # train at compile time, and a trainable change without it is silently ignored
            compile_model(model, phase_spec, plan, steps * phase.epochs)
            perf = performance_callback(phase_spec, has_val)
            model.fit(
                X_train,
                y_train,
                validation_data=(X_val, y_val) if has_val else None,
                initial_epoch=epochs_done,
                epochs=epochs_done + phase.epochs,
                batch_size=spec.batch_size,
                shuffle=True,
                verbose=0,
                callbacks=callbacks + ([perf] if perf is not None else []),
            )
            epochs_done += phase.epochs
            if signal.reason is not None:
                break
    finally:
        done.set()
        watcher.join()

    if signal.reason == "cancelled":
        _finish(ctx, job_id, status="cancelled")
        return "cancelled"
    if signal.reason == "diverged":
        raise JobFailed("diverged", DIVERGED_HINT)
    if signal.reason == "timeout":
        raise JobFailed(
            "timeout",
            f"The job ran past max_runtime_seconds ({spec.max_runtime_seconds} s) and was stopped.",
        )

    metrics = final_metrics(history, early_stopping)
    if metrics.get("loss") is None:
        raise JobFailed("diverged", DIVERGED_HINT)

    uncertainty = None
    if has_val and has_dropout(model):
        uncertainty = measure_uncertainty(
            Predictor(model, meta.task),
            X_val,
            y_val,
            meta.task,
            spec.uncertainty_samples,
            spec.seed,
        )

    model_id = new_id()
    key = f"models/{model_id}/model.keras"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        ctx.store.put_file(key, path)
    with ctx.session_factory() as session:
        session.add(
            TrainedModel(
                id=model_id,
                job_id=job_id,
                base_model_id=spec.base_model.model_id if spec.base_model else None,
                backend=keras.backend.backend(),
                task=meta.task,
                n_classes=meta.n_classes,
                input_shape=list(meta.input_shape),
                has_dropout=has_dropout(model),
                summary=model_summary(model),
                metrics=metrics,
                uncertainty=uncertainty,
                pruning=sparsity_report(model, spec.pruning.target_sparsity)
                if spec.pruning
                else None,
                artifact_key=key,
            )
        )
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="succeeded", finished_at=utcnow(), model_id=model_id, metrics=metrics)
        )
        session.commit()
    return "succeeded"


def phases(spec: TrainingSpec) -> list[Phase]:
    return list(spec.phases) if spec.phases else [Phase(epochs=spec.epochs)]


def final_metrics(
    history: dict[str, list[float | None]], early_stopping: keras.callbacks.EarlyStopping | None
) -> dict[str, float | None]:
    """The logs of the epoch whose weights are stored: the last, or the best one restored.

    Reusing the epoch logs costs nothing; a fresh evaluation would add a pass over the data.
    """
    epoch = -1
    if (
        early_stopping is not None
        and early_stopping.restore_best_weights
        and early_stopping.best_weights is not None
    ):
        epoch = early_stopping.best_epoch
    return {k: v[epoch] for k, v in history.items() if k != "learning_rate" and v}
