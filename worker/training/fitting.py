"""Running the phases of a training job with the service's callbacks: progress and gradient
health written each epoch, a checkpoint after each epoch, early stopping, the plateau
schedule, pruning, cancel and hand-back. Each phase recompiles (Keras fixes which weights train
at compile time) and its optimizer continues the job's step count, so schedules count steps
over the whole job.
"""

import logging
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError

from service.jobs.progress import publish_epoch
from service.rows import Job, JobDiagnostics
from service.spec import TrainingSpec
from service.spec.training import Phase
from worker.build.losses import keras_loss
from worker.build.model import compile_model
from worker.build.optimizers import plateau_callback
from worker.jobs.lifecycle import JobRun
from worker.training.callbacks import EpochRecorder, StopAtBatchEnd
from worker.training.checkpoint import (
    Checkpoints,
    EpochCheckpoint,
    ResumableEarlyStopping,
    restore_callbacks,
)
from worker.training.diagnostics import GradientHealth
from worker.training.pruning import MagnitudePruning
from worker.training.tensorboard import job_tensorboard

if TYPE_CHECKING:
    from worker.training.runner import Prepared

log = logging.getLogger(__name__)
PROBE_ROWS = 256  # rows of the fixed batch that gradient health is measured on
History = dict[str, list[float | None]]
NOT_METRICS = ("learning_rate", "momentum", "epoch_seconds")  # in the history, not the metrics


COMPILED_NEEDS_JAX = (
    "The compiled epoch needs the JAX backend and this worker runs {backend}: the job was "
    "trained with Keras fit."
)
COMPILED_ONE_DEVICE = (
    "The compiled epoch trains on one device: the job on {devices} devices was trained with "
    "Keras fit under Keras's distribution API."
)


def choose_engine(asked: str, devices: int = 1) -> tuple[str, dict[str, Any] | None]:
    """The engine a job runs on here, and a warning when it is not the one asked for."""
    backend = keras.backend.backend()
    if asked == "fit":
        return "fit", None
    if devices > 1:  # the compiled scan places data and state on one device: fit shards
        warning = COMPILED_ONE_DEVICE.format(devices=devices) if asked == "compiled" else None
        return "fit", {"code": "engine_fallback", "message": warning} if warning else None
    if backend == "jax":
        return "compiled", None
    if asked == "compiled":
        message = COMPILED_NEEDS_JAX.format(backend=backend)
        return "fit", {"code": "engine_fallback", "message": message}
    return "fit", None


def phases(spec: TrainingSpec) -> list[Phase]:
    return list(spec.phases) if spec.phases else [Phase(epochs=spec.epochs)]


class Fitting:
    """The model, its history and the callbacks that carry state across epochs and resumes."""

    def __init__(
        self,
        run: JobRun,
        job: "Prepared",
        model: keras.Model,
        history: History,
        resume: dict[str, Any] | None,
        checkpoints: Checkpoints,
    ) -> None:
        self.run, self.job, self.model, self.history = run, job, model, history
        self.resume, self.checkpoints = resume, checkpoints
        self.resume_epoch = int(resume["epoch"]) if resume else 0
        reused = sum(1 for layer in job.plan.layers if layer.type == "reused")
        self.reused = model.layers[:reused]
        self.early_stopping = self._early_stopping()
        self.pruning = self._pruning()
        if resume is not None:
            restore_callbacks(resume, self.early_stopping, self.pruning)
        self.callbacks = self._callbacks()
        self.engine, self.engine_warning = choose_engine(
            job.spec.engine, job.spec.resources.devices
        )

    def _early_stopping(self) -> ResumableEarlyStopping | None:
        es = self.job.spec.early_stopping
        if es is None:
            return None
        monitor = es.monitor if self.job.has_validation else es.monitor.removeprefix("val_")
        return ResumableEarlyStopping(
            monitor=monitor,
            patience=es.patience,
            min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights,
            mode="max" if monitor.removeprefix("val_") in ("accuracy", "auc") else "min",
        )

    def _pruning(self) -> MagnitudePruning | None:
        p = self.job.spec.pruning
        if p is None:
            return None
        steps = self.job.steps_per_epoch
        end = (p.end_epoch or self.job.plan.epochs) * steps
        return MagnitudePruning(p.target_sparsity, p.begin_epoch * steps, end, p.frequency)

    def _callbacks(self) -> list[keras.callbacks.Callback]:
        job, signal = self.job, self.run.signal
        probe = slice(0, min(PROBE_ROWS, len(job.X_train)))
        health = GradientHealth(
            job.X_train[probe], job.y_train[probe], keras_loss(job.plan.loss), self._health
        )
        callbacks: list[keras.callbacks.Callback] = [
            health,
            EpochRecorder(self.history, signal, self._progress),
            StopAtBatchEnd(signal, job.deadline),
        ]
        board = job_tensorboard(
            self.run, job.plan.epochs, self.history, health.gradients, self.resume is None
        )
        if board is not None:  # after the recorder and the health probe: it reads both
            callbacks.append(board)
        if self.early_stopping is not None:
            callbacks.append(self.early_stopping)
        if self.pruning is not None:
            callbacks.append(self.pruning)  # after early stopping: re-applies its masks at the end
        return callbacks

    def run_phases(self) -> None:
        epochs_done = 0
        for phase in phases(self.job.spec):
            phase_end = epochs_done + phase.epochs
            if phase_end > self.resume_epoch:
                self._phase(phase, epochs_done, phase_end)
                if self.run.signal.reason is not None:
                    return
            epochs_done = phase_end

    def _phase(self, phase: Phase, epochs_done: int, phase_end: int) -> None:
        job = self.job
        phase_spec = job.spec
        if phase.learning_rate is not None:
            optimizer = phase_spec.optimizer.model_copy(
                update={"learning_rate": phase.learning_rate}
            )
            phase_spec = phase_spec.model_copy(update={"optimizer": optimizer, "lr_schedule": None})
        mid_phase = self.resume is not None and epochs_done < self.resume_epoch
        if not mid_phase:  # (mid-phase, the checkpoint's optimizer carries on where it stopped)
            self._compile_phase(phase, phase_spec, epochs_done)
        plateau = plateau_callback(phase_spec, job.has_validation)
        if plateau is not None and mid_phase and self.resume and "plateau" in self.resume:
            plateau.resume = self.resume["plateau"]
        saver = EpochCheckpoint(lambda epoch, pl=plateau: self.save_checkpoint(epoch, pl))
        callbacks = [*self.callbacks, *([plateau] if plateau else []), saver]
        first = max(epochs_done, self.resume_epoch)
        common = {
            "validation_data": (job.X_val, job.y_val) if job.has_validation else None,
            "initial_epoch": first,
            "epochs": phase_end,
            "batch_size": job.spec.batch_size,
            "callbacks": callbacks,
        }
        if self.engine == "compiled":
            self._fit_compiled(common)
        else:
            self.model.fit(job.X_train, job.y_train, shuffle=True, verbose=0, **common)
        if self.run.signal.reason == "released":  # graceful stop: keep this epoch's progress
            self.save_checkpoint(len(self.history.get("loss", [])), plateau, batches=1)

    def _fit_compiled(self, common: dict[str, Any]) -> None:
        from worker.training.compiled import fit_compiled

        job, pruning = self.job, self.pruning
        steps = job.steps_per_epoch
        fit_compiled(
            self.model,
            job.X_train,
            job.y_train,
            seed=job.seed,
            step_masks=(lambda _epoch: pruning.epoch_masks(steps)) if pruning else None,
            device_budget_bytes=self.run.ctx.settings.device_memory_budget_bytes,
            **common,
        )

    def _compile_phase(self, phase: Phase, phase_spec: TrainingSpec, epochs_done: int) -> None:
        """A new optimizer and a compile for the phase, continuing the job's step count."""
        spec = self.job.spec
        freeze = phase.freeze_base
        if freeze is None:
            freeze = spec.base_model.freeze if spec.base_model else False
        for layer in self.reused:
            layer.trainable = not freeze
        # Keras fixes which weights train at compile time: a trainable change needs it
        steps = self.job.steps_per_epoch
        compile_model(self.model, phase_spec, self.job.plan, steps * self.job.plan.epochs)
        if epochs_done:
            optimizer = self.model.optimizer
            optimizer.build(self.model.trainable_variables)
            optimizer.iterations.assign(steps * epochs_done)

    def save_checkpoint(self, epoch: int, plateau: Any, batches: int = 0) -> None:
        state: dict[str, Any] = {"epoch": epoch, "batches": batches, "history": self.history}
        arrays: dict[str, np.ndarray] = {}
        if self.early_stopping is not None:
            state["early_stopping"], best = self.early_stopping.state()
            arrays.update({f"best_{i}": w for i, w in enumerate(best)})
        if plateau is not None:
            state["plateau"] = plateau.state()
        if self.pruning is not None:
            state["pruning"] = {
                "step": self.pruning.step,
                "mask_sparsity": self.pruning.mask_sparsity,
            }
            for i, mask in enumerate(self.pruning.masks or []):
                arrays[f"mask_{i}"] = keras.ops.convert_to_numpy(mask)
        self.checkpoints.save(self.model, state, arrays)

    def final_metrics(self) -> dict[str, float | None]:
        """The logs of the epoch whose weights are stored: the last, or the best one restored.

        Reusing the epoch logs costs nothing; a fresh evaluation would add a pass over the data.
        """
        epoch = -1
        es = self.early_stopping
        if es is not None and es.restore_best_weights and es.best_weights is not None:
            epoch = es.best_epoch
        history = self.history.items()
        return {k: v[epoch] for k, v in history if k not in NOT_METRICS and len(v) > max(epoch, 0)}

    def _progress(self, epoch: int, history: History) -> None:
        run = self.run
        try:
            with run.ctx.session_factory() as session:
                session.execute(
                    update(Job)
                    .where(Job.id == run.job_id, Job.lease_owner == run.owner)
                    .values(epoch=epoch, history={k: list(v) for k, v in history.items()})
                )
                session.commit()
        except OperationalError:  # the database is restarting: the next epoch writes it all
            log.warning("could not write progress of job %s", run.job_id, exc_info=True)
        # open event streams follow this instead of reading the row (never raises)
        publish_epoch(run.ctx.settings, run.job_id, epoch, self.job.plan.epochs, history)
        run.log.epoch(epoch, self.job.plan.epochs, history)  # never raises

    def _health(
        self, epoch: int, layers: list[dict[str, Any]], found: list[dict[str, Any]]
    ) -> None:
        try:
            store_health(self.run, epoch, layers, found)
        except OperationalError:
            log.warning("could not write diagnostics of job %s", self.run.job_id, exc_info=True)


def start_attempt(
    run: JobRun, resumed_from: int | None, history: History, fitting: Fitting
) -> None:
    """Record the attempt's start: its engine, and a clean slate unless it resumes."""
    with run.ctx.session_factory() as session:
        values: dict[str, Any] = {
            "epoch": len(history.get("loss", [])),
            "history": history,
            "engine": fitting.engine,
        }
        if resumed_from is not None:
            values["resumed_from_epoch"] = resumed_from
        else:
            warning = fitting.engine_warning
            values["warnings"] = [warning] if warning else []
            session.execute(delete(JobDiagnostics).where(JobDiagnostics.job_id == run.job_id))
        session.execute(
            update(Job).where(Job.id == run.job_id, Job.lease_owner == run.owner).values(**values)
        )
        session.commit()


def store_health(
    run: JobRun, epoch: int, layers: list[dict[str, Any]], found: list[dict[str, Any]]
) -> None:
    with run.ctx.session_factory() as session:
        # an epoch re-run after a resume replaces its earlier record
        session.execute(
            delete(JobDiagnostics).where(
                JobDiagnostics.job_id == run.job_id, JobDiagnostics.epoch == epoch
            )
        )
        session.add(JobDiagnostics(job_id=run.job_id, epoch=epoch, layers=layers, flags=found))
        if found:
            job = session.scalar(select(Job).where(Job.id == run.job_id))
            assert job is not None
            known = {w["code"] for w in job.warnings or []}
            new = [f for f in found if f["code"] not in known]
            if new:
                job.warnings = [*(job.warnings or []), *new]
        session.commit()
