"""Optimizer and learning-rate schedule builders (spec -> Keras)."""

from typing import Any

import keras

from inference.custom_objects import OneCycle, OneCycleSGD
from service.spec import TrainingSpec

OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "sgd": keras.optimizers.SGD,
    "adagrad": keras.optimizers.Adagrad,
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "nadam": keras.optimizers.Nadam,
    "adamax": keras.optimizers.Adamax,
    "adamw": keras.optimizers.AdamW,
}


def learning_rate(spec: TrainingSpec, total_steps: int) -> Any:
    """A float, or a schedule object stepping once per batch over the whole job."""
    lr0 = spec.optimizer.learning_rate
    sched = spec.lr_schedule
    if sched is None or sched.type == "performance":
        return lr0  # ReduceLROnPlateau needs a float rate
    schedules = keras.optimizers.schedules
    if sched.type == "power":
        return schedules.InverseTimeDecay(lr0, sched.decay_steps, sched.decay_rate)
    if sched.type == "exponential":
        return schedules.ExponentialDecay(lr0, sched.decay_steps, sched.decay_rate)
    if sched.type == "piecewise":
        return schedules.PiecewiseConstantDecay(list(sched.boundaries), list(sched.values))
    return OneCycle(
        total_steps, sched.max_learning_rate, sched.start_learning_rate, sched.last_learning_rate
    )


def build_optimizer(spec: TrainingSpec, total_steps: int) -> keras.optimizers.Optimizer:
    cfg = spec.optimizer.model_dump(exclude={"type"}, exclude_none=True)
    cfg["learning_rate"] = learning_rate(spec, total_steps)
    sched = spec.lr_schedule
    if (
        spec.optimizer.type == "sgd"
        and cfg["momentum"] > 0
        and sched is not None
        and sched.type == "one_cycle"
        and sched.min_momentum < cfg["momentum"]
    ):
        return OneCycleSGD(total_steps=total_steps, min_momentum=sched.min_momentum, **cfg)
    return OPTIMIZERS[spec.optimizer.type](**cfg)


def performance_callback(spec: TrainingSpec, has_validation: bool) -> Any:
    sched = spec.lr_schedule
    if sched is None or sched.type != "performance":
        return None
    from worker.training.checkpoint import ResumableReduceLROnPlateau

    return ResumableReduceLROnPlateau(
        monitor="val_loss" if has_validation else "loss",
        factor=sched.factor,
        patience=sched.patience,
        min_lr=sched.min_learning_rate,
        verbose=0,
    )
