"""One training job, start to end: build (or resume), fit with callbacks, store the model.

A job's failure is always stored with a clear error; no path leaves it `running`.
"""

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError

from inference.sampler import Predictor
from inference.summary import has_dropout, model_summary
from service import datasets
from service.jobs import base_model_row
from service.rows import Job, JobDiagnostics, TrainedModel, new_id, utcnow
from service.spec import TrainingSpec
from service.spec.plan import plan_model
from service.spec.training import Phase
from worker.build.model import LOSSES, build_model, compile_model
from worker.build.optimizers import performance_callback
from worker.context import WorkerContext
from worker.errors import JobFailed
from worker.lease import Claim, Watcher, finish, release, requeue
from worker.training.callbacks import EpochRecorder, StopAtBatchEnd, StopSignal
from worker.training.checkpoint import (
    Checkpoints,
    EpochCheckpoint,
    ResumableEarlyStopping,
    restore_callbacks,
)
from worker.training.data import load_arrays, split, targets
from worker.training.diagnostics import GradientHealth
from worker.training.pruning import MagnitudePruning, sparsity_report
from worker.training.uncertainty import measure as measure_uncertainty

log = logging.getLogger(__name__)

DIVERGED_HINT = (
    "The loss became NaN or infinite: training diverged. Usual cures: a lower learning rate, "
    "gradient clipping (optimizer.clipnorm or clipvalue), batch normalisation, or another "
    "initialiser (he_normal with ReLU/ELU, lecun_normal with SELU)."
)
PROBE_ROWS = 256  # rows of the fixed batch that gradient health is measured on


def train(ctx: WorkerContext, job_id: str, claimed: Claim) -> str:
    """Train a claimed job: build (or resume from its checkpoint), fit, store the model."""
    started = time.monotonic()
    owner = claimed.owner
    spec = TrainingSpec.model_validate(claimed.spec)
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
    # one split per job, also across a resume when the spec gives no seed
    split_seed = spec.seed if spec.seed is not None else int(job_id[:8], 16)
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    train_idx, val_idx = split(meta.n_samples, spec.validation_split, split_seed)
    X_train, X_val = arrays.X[train_idx], arrays.X[val_idx]
    y_all = targets(arrays.y, plan.loss, meta.n_classes)
    y_train, y_val = y_all[train_idx], y_all[val_idx]
    has_val = len(val_idx) > 0
    steps = math.ceil(len(X_train) / spec.batch_size)

    checkpoints = Checkpoints(ctx.store, job_id)
    resume = checkpoints.load()  # left by a dead worker, or by a graceful hand-back
    if resume is None:
        checkpoints.clear()
        normalize = spec.model.normalize_inputs and base_model is None
        model = build_model(plan, meta.input_shape, X_train if normalize else None, base_model)
        history: dict[str, list[float | None]] = {}
        resume_epoch = 0
    else:
        model = checkpoints.load_model(resume)
        history = {k: list(v) for k, v in resume["history"].items()}
        resume_epoch = int(resume["epoch"])
    _start_attempt(ctx, job_id, owner, resume_epoch if resume else None, history)
    reused = model.layers[: sum(1 for layer in plan.layers if layer.type == "reused")]

    signal = StopSignal()

    def report(epoch: int, hist: dict[str, list[float | None]]) -> None:
        try:
            with ctx.session_factory() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == owner)
                    .values(epoch=epoch, history={k: list(v) for k, v in hist.items()})
                )
                session.commit()
        except OperationalError:  # the database is restarting: the next epoch writes it all
            log.warning("could not write progress of job %s", job_id, exc_info=True)

    def report_health(
        epoch: int, layers: list[dict[str, Any]], found: list[dict[str, Any]]
    ) -> None:
        try:
            _store_health(ctx, job_id, epoch, layers, found)
        except OperationalError:
            log.warning("could not write diagnostics of job %s", job_id, exc_info=True)

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
        early_stopping = ResumableEarlyStopping(
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
        callbacks.append(pruning)  # after early stopping: it re-applies its masks at the end
    if resume is not None:
        restore_callbacks(resume, early_stopping, pruning)

    def save_checkpoint(epoch: int, plateau: Any, batches: int = 0) -> None:
        state: dict[str, Any] = {"epoch": epoch, "batches": batches, "history": history}
        arrays_out: dict[str, np.ndarray] = {}
        if early_stopping is not None:
            state["early_stopping"], best = early_stopping.state()
            arrays_out.update({f"best_{i}": w for i, w in enumerate(best)})
        if plateau is not None:
            state["plateau"] = plateau.state()
        if pruning is not None:
            state["pruning"] = {"step": pruning.step, "mask_sparsity": pruning.mask_sparsity}
            for i, mask in enumerate(pruning.masks or []):
                arrays_out[f"mask_{i}"] = keras.ops.convert_to_numpy(mask)
        checkpoints.save(model, state, arrays_out)

    watcher = Watcher(ctx, job_id, owner, signal)
    watcher.start()
    try:
        epochs_done = 0
        for phase in phases(spec):
            phase_end = epochs_done + phase.epochs
            if phase_end <= resume_epoch:
                epochs_done = phase_end
                continue
            mid_phase = resume is not None and epochs_done < resume_epoch
            phase_spec = spec
            if phase.learning_rate is not None:
                optimizer = spec.optimizer.model_copy(update={"learning_rate": phase.learning_rate})
                phase_spec = spec.model_copy(update={"optimizer": optimizer, "lr_schedule": None})
            if not mid_phase:
                freeze = phase.freeze_base
                if freeze is None:
                    freeze = spec.base_model.freeze if spec.base_model else False
                for layer in reused:
                    layer.trainable = not freeze
                # a new optimizer and a compile for every phase: Keras fixes which weights
                # train at compile time, and a trainable change without it is silently ignored
                compile_model(model, phase_spec, plan, steps * phase.epochs)
            # (mid-phase, the checkpoint's compiled optimizer carries on where it stopped)
            plateau = performance_callback(phase_spec, has_val)
            if plateau is not None and mid_phase and resume and "plateau" in resume:
                plateau.resume = resume["plateau"]
            saver = EpochCheckpoint(lambda epoch, pl=plateau: save_checkpoint(epoch, pl))
            model.fit(
                X_train,
                y_train,
                validation_data=(X_val, y_val) if has_val else None,
                initial_epoch=max(epochs_done, resume_epoch),
                epochs=phase_end,
                batch_size=spec.batch_size,
                shuffle=True,
                verbose=0,
                callbacks=[*callbacks, *([plateau] if plateau else []), saver],
            )
            epochs_done = phase_end
            if signal.reason is not None:
                if signal.reason == "released":  # graceful stop: keep this epoch's progress
                    save_checkpoint(len(history.get("loss", [])), plateau, batches=1)
                break
    finally:
        watcher.stop()

    if signal.reason == "lease_lost":
        return "lease_lost"  # another worker holds the job now; write nothing
    if signal.reason == "released":
        if release(ctx, job_id, owner):
            requeue(ctx, job_id)
        return "released"
    if signal.reason == "cancelled":
        finish(ctx, job_id, owner, status="cancelled")
        checkpoints.clear()
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
    row = TrainedModel(
        id=model_id,
        tenant=claimed.tenant,
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
        pruning=sparsity_report(model, spec.pruning.target_sparsity) if spec.pruning else None,
        artifact_key=key,
    )
    if not _succeed(ctx, job_id, owner, row, metrics):
        ctx.store.delete(key)
        return "lease_lost"
    checkpoints.clear()
    return "succeeded"


def _start_attempt(
    ctx: WorkerContext,
    job_id: str,
    owner: str,
    resumed_from: int | None,
    history: dict[str, list[float | None]],
) -> None:
    with ctx.session_factory() as session:
        values: dict[str, Any] = {"epoch": len(history.get("loss", [])), "history": history}
        if resumed_from is not None:
            values["resumed_from_epoch"] = resumed_from
        else:
            values["warnings"] = []
            session.execute(delete(JobDiagnostics).where(JobDiagnostics.job_id == job_id))
        session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == owner).values(**values)
        )
        session.commit()


def _store_health(
    ctx: WorkerContext,
    job_id: str,
    epoch: int,
    layers: list[dict[str, Any]],
    found: list[dict[str, Any]],
) -> None:
    with ctx.session_factory() as session:
        # an epoch re-run after a resume replaces its earlier record
        session.execute(
            delete(JobDiagnostics).where(
                JobDiagnostics.job_id == job_id, JobDiagnostics.epoch == epoch
            )
        )
        session.add(JobDiagnostics(job_id=job_id, epoch=epoch, layers=layers, flags=found))
        if found:
            job = session.scalar(select(Job).where(Job.id == job_id))
            assert job is not None
            known = {w["code"] for w in job.warnings or []}
            new = [f for f in found if f["code"] not in known]
            if new:
                job.warnings = [*(job.warnings or []), *new]
        session.commit()


def _succeed(
    ctx: WorkerContext, job_id: str, owner: str, row: TrainedModel, metrics: dict[str, float | None]
) -> bool:
    """Store the model and end the job in one transaction, only while holding the lease."""
    for attempt in range(30):  # ride out a database restart rather than lose the result
        try:
            with ctx.session_factory() as session:
                done = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == owner)
                    .values(
                        status="succeeded",
                        finished_at=utcnow(),
                        model_id=row.id,
                        metrics=metrics,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
                if done.rowcount != 1:  # type: ignore[attr-defined]
                    session.rollback()
                    return False
                session.add(row)
                session.commit()
                return True
        except OperationalError:
            log.warning("database unavailable while storing job %s (try %d)", job_id, attempt)
            time.sleep(2)
    raise RuntimeError("the database stayed unavailable while storing the model")


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
