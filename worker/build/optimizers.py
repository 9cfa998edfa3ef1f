"""Optimizer and learning-rate schedule builders (spec -> Keras), one registered per `type` of
service/spec/optimizers.py and service/spec/schedules.py.
"""

from collections.abc import Callable
from typing import Any

import keras

from inference.custom_objects import OneCycle, OneCycleSGD
from service.registry import register_in
from service.spec import TrainingSpec
from service.spec import schedules as s

OptimizerBuilder = Callable[[Any, Any], keras.optimizers.Optimizer]
ScheduleBuilder = Callable[[Any, float, int], Any]
OPTIMIZER_BUILDERS: dict[str, OptimizerBuilder] = {}
SCHEDULE_BUILDERS: dict[str, ScheduleBuilder] = {}


def _keras_optimizer(type_name: str, cls: type[keras.optimizers.Optimizer]) -> None:
    """Spec fields are the Keras constructor's own arguments: one generic builder each."""

    def build(spec: Any, rate: Any) -> keras.optimizers.Optimizer:
        return cls(
            **spec.model_dump(exclude={"type", "learning_rate"}, exclude_none=True),
            learning_rate=rate,
        )

    OPTIMIZER_BUILDERS[type_name] = build


for _name, _cls in {
    "sgd": keras.optimizers.SGD,
    "adagrad": keras.optimizers.Adagrad,
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "nadam": keras.optimizers.Nadam,
    "adamax": keras.optimizers.Adamax,
    "adamw": keras.optimizers.AdamW,
}.items():
    _keras_optimizer(_name, _cls)


def builds_schedule(type_name: str) -> Callable[[ScheduleBuilder], ScheduleBuilder]:
    """Register the builder of one schedule type."""
    return register_in(SCHEDULE_BUILDERS, type_name)


@builds_schedule("power")
def power(spec: s.Power, lr0: float, total_steps: int) -> Any:
    return keras.optimizers.schedules.InverseTimeDecay(lr0, spec.decay_steps, spec.decay_rate)


@builds_schedule("exponential")
def exponential(spec: s.Exponential, lr0: float, total_steps: int) -> Any:
    return keras.optimizers.schedules.ExponentialDecay(lr0, spec.decay_steps, spec.decay_rate)


@builds_schedule("piecewise")
def piecewise(spec: s.Piecewise, lr0: float, total_steps: int) -> Any:
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        list(spec.boundaries), list(spec.values)
    )


@builds_schedule("performance")
def performance(spec: s.Performance, lr0: float, total_steps: int) -> Any:
    return lr0  # a float: ReduceLROnPlateau (plateau_callback) lowers it, and needs a float


@builds_schedule("one_cycle")
def one_cycle(spec: s.OneCycle, lr0: float, total_steps: int) -> Any:
    return OneCycle(
        total_steps, spec.max_learning_rate, spec.start_learning_rate, spec.last_learning_rate
    )


def learning_rate(spec: TrainingSpec, total_steps: int) -> Any:
    """A float, or a schedule object stepping once per batch over the whole job."""
    lr0 = spec.optimizer.learning_rate
    if spec.lr_schedule is None:
        return lr0
    return SCHEDULE_BUILDERS[spec.lr_schedule.type](spec.lr_schedule, lr0, total_steps)


def build_optimizer(spec: TrainingSpec, total_steps: int) -> keras.optimizers.Optimizer:
    rate = learning_rate(spec, total_steps)
    opt, sched = spec.optimizer, spec.lr_schedule
    if (
        isinstance(sched, s.OneCycle)
        and opt.type == "sgd"
        and opt.momentum > 0
        and sched.min_momentum < opt.momentum
    ):  # 1cycle also cycles SGD's momentum, inversely to the rate
        cfg = opt.model_dump(exclude={"type", "learning_rate"}, exclude_none=True)
        return OneCycleSGD(
            total_steps=total_steps, min_momentum=sched.min_momentum, learning_rate=rate, **cfg
        )
    return OPTIMIZER_BUILDERS[opt.type](opt, rate)


def plateau_callback(spec: TrainingSpec, has_validation: bool) -> Any:
    """The performance schedule's callback (ReduceLROnPlateau), or None for other schedules."""
    sched = spec.lr_schedule
    if not isinstance(sched, s.Performance):
        return None
    from worker.training.checkpoint import ResumableReduceLROnPlateau

    return ResumableReduceLROnPlateau(
        monitor="val_loss" if has_validation else "loss",
        factor=sched.factor,
        patience=sched.patience,
        min_lr=sched.min_learning_rate,
        verbose=0,
    )
