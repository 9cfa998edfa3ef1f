"""A training job, start to end, in named steps: prepare the data and plan, build the model
(or resume it from its checkpoint), run the phases, store the model.

A job's failure is always stored with a clear error; no path leaves it `running`.
"""

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from inference.sampler import Predictor
from inference.summary import has_dropout
from service.datasets.arrays import describe
from service.jobs.service import base_model_row, plan_within_limits
from service.spec import TrainingSpec
from service.spec.plan import DatasetMeta, ModelPlan
from worker.build.model import build_model
from worker.jobs.lifecycle import JobFailed, JobRun, runs
from worker.training.checkpoint import Checkpoints
from worker.training.data import load_arrays, split, targets
from worker.training.devices import devices_asked, distributed, even_rows
from worker.training.fitting import Fitting, start_attempt
from worker.training.pruning import sparsity_report
from worker.training.uncertainty import measure as measure_uncertainty

DIVERGED_HINT = (
    "The loss became NaN or infinite: training diverged. Usual cures: a lower learning rate, "
    "gradient clipping (optimizer.clipnorm or clipvalue), batch normalisation, or another "
    "initialiser (he_normal with ReLU/ELU, lecun_normal with SELU)."
)


@dataclass
class Prepared:
    """A job's plan and data, split into training and validation rows."""

    spec: TrainingSpec  # with its preset applied
    plan: ModelPlan
    meta: DatasetMeta
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    base_model: keras.Model | None
    started: float
    split_seed: int
    class_names: list[str] | None

    @property
    def has_validation(self) -> bool:
        return len(self.X_val) > 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.X_train) / self.spec.batch_size)

    @property
    def seed(self) -> int:
        """Shuffling and dropout draws of the compiled engine: the spec's, else the job's."""
        return self.spec.seed if self.spec.seed is not None else self.split_seed

    @property
    def deadline(self) -> float | None:
        limit = self.spec.max_runtime_seconds
        return self.started + limit if limit else None


@runs("train")
def train(run: JobRun) -> str:
    """Train a claimed job: build (or resume from its checkpoint), fit, store the model; on
    several devices, all of it inside their distribution (worker/training/devices.py)."""
    with distributed(devices_asked(run.claim.spec)):
        job = prepare(run)
        checkpoints = Checkpoints(run.ctx.store, run.job_id)
        fitting = build_or_resume(run, job, checkpoints)
        with run.watched():
            fitting.run_phases()
        if run.signal.reason is not None:
            return end_early(run, job, fitting)
        return store(run, job, fitting)


def prepare(run: JobRun) -> Prepared:
    """Validate the stored spec (upgraded to today's version), load and split the data."""
    started = time.monotonic()
    ctx = run.ctx
    spec = TrainingSpec.model_validate({**run.claim.spec, "spec_version": run.claim.spec_version})
    arrays = load_arrays(ctx, spec)
    meta = describe(arrays)
    base_model, base_layers = None, None
    if spec.base_model is not None:
        with ctx.session_factory() as session:
            row = base_model_row(session, spec, meta)
            assert row is not None
            base_layers, base_key = row.summary["layers"], row.artifact_key
        with ctx.store.local_file(base_key) as path:
            base_model = keras.saving.load_model(path, compile=False, safe_mode=True)
    plan = plan_within_limits(spec, meta, ctx.settings, base_layers)
    spec = plan.spec
    # one split per job, also across a resume when the spec gives no seed
    split_seed = spec.seed if spec.seed is not None else int(run.job_id[:8], 16)
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    train_idx, val_idx = split(meta.n_samples, spec.validation_split, split_seed)
    devices = spec.resources.devices  # (several: batches must split evenly across them)
    train_idx, val_idx = even_rows(train_idx, devices), even_rows(val_idx, devices)
    y_all = targets(arrays.y, plan.loss, meta.n_classes)
    return Prepared(
        spec, plan, meta, arrays.X[train_idx], y_all[train_idx], arrays.X[val_idx],
        y_all[val_idx], base_model, started, split_seed, arrays.class_names,
    )  # fmt: skip


def build_or_resume(run: JobRun, job: Prepared, checkpoints: Checkpoints) -> Fitting:
    """A new model, or the one a dead worker (or a graceful hand-back) checkpointed."""
    resume = checkpoints.load()
    if resume is None:
        checkpoints.clear()
        normalize = job.spec.model.normalize_inputs and job.base_model is None
        model = build_model(
            job.plan, job.meta.input_shape, job.X_train if normalize else None, job.base_model
        )
        history: dict[str, list[float | None]] = {}
    else:
        model = checkpoints.load_model(resume)
        history = {k: list(v) for k, v in resume["history"].items()}
        run.log.info(
            "resumed",
            f"resumed from the checkpoint of epoch {resume['epoch']}",
            epoch=int(resume["epoch"]),
        )
    fitting = Fitting(run, job, model, history, resume, checkpoints)
    start_attempt(run, None if resume is None else int(resume["epoch"]), history, fitting)
    return fitting


def end_early(run: JobRun, job: Prepared, fitting: Fitting) -> str:
    """Stopped before the last epoch: hand back, cancel, or fail with the reason."""
    reason = run.signal.reason
    if reason == "diverged":
        raise JobFailed("diverged", DIVERGED_HINT)
    if reason == "timeout":
        raise JobFailed(
            "timeout",
            f"The job ran past max_runtime_seconds ({job.spec.max_runtime_seconds} s) "
            "and was stopped.",
        )
    outcome = run.stopped()
    if outcome == "cancelled":
        fitting.checkpoints.clear()
    return outcome


def store(run: JobRun, job: Prepared, fitting: Fitting) -> str:
    """Measure uncertainty, save the model and end the job with it in one transaction."""
    model, spec = fitting.model, job.spec
    metrics = fitting.final_metrics()
    if metrics.get("loss") is None:
        raise JobFailed("diverged", DIVERGED_HINT)
    uncertainty = None
    if job.has_validation and has_dropout(model):
        uncertainty = measure_uncertainty(
            Predictor(model, job.meta.task),
            job.X_val,
            job.y_val,
            job.meta.task,
            spec.uncertainty.mc_samples,
            spec.seed,
            bins=spec.uncertainty.bins,
        )
    row = run.save_model(
        model,
        name=spec.name or "model",
        class_names=job.class_names,
        job_id=run.job_id,
        base_model_id=spec.base_model.model_id if spec.base_model else None,
        task=job.meta.task,
        n_classes=job.meta.n_classes,
        metrics=metrics,
        uncertainty=uncertainty,
        pruning=sparsity_report(model, spec.pruning.target_sparsity) if spec.pruning else None,
    )
    outcome = run.succeed(row, metrics=metrics)
    if outcome == "succeeded":
        fitting.checkpoints.clear()
    return outcome
