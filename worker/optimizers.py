"""Optimizer and learning-rate schedule builders (spec -> Keras)."""

from typing import Any

import keras

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


@keras.saving.register_keras_serializable(package="kts")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """1cycle (Smith 2018): Keras ships no such schedule, so it is written here.

    Rises linearly from start to max over the first 45% of steps, falls back over the next
    45%, then decays linearly to `last_rate`.
    """

    def __init__(
        self,
        total_steps: int,
        max_rate: float,
        start_rate: float | None = None,
        last_rate: float | None = None,
    ) -> None:
        self.total_steps = int(total_steps)
        self.max_rate = float(max_rate)
        self.start_rate = float(start_rate if start_rate is not None else max_rate / 10)
        self.last_rate = float(last_rate if last_rate is not None else self.start_rate / 1000)

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        step = ops.cast(step, "float32")
        half = max(1.0, 0.45 * self.total_steps)
        rise = self.start_rate + (self.max_rate - self.start_rate) * step / half
        fall = self.max_rate - (self.max_rate - self.start_rate) * (step - half) / half
        tail_len = max(1.0, self.total_steps - 2 * half)
        tail = self.start_rate - (self.start_rate - self.last_rate) * ops.minimum(
            (step - 2 * half) / tail_len, 1.0
        )
        return ops.where(step < half, rise, ops.where(step < 2 * half, fall, tail))

    def get_config(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "max_rate": self.max_rate,
            "start_rate": self.start_rate,
            "last_rate": self.last_rate,
        }


@keras.saving.register_keras_serializable(package="kts")
class OneCycleSGD(keras.optimizers.SGD):
    """SGD whose momentum cycles inversely to the 1cycle learning rate (Smith 2018).

    Keras reads SGD's momentum as a constant, so this subclass computes it from the step
    count inside the update: from max to min over the first 45% of steps, back to max over the
    next 45%, then held at max.
    """

    def __init__(self, total_steps: int = 1, min_momentum: float = 0.85, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_steps = int(total_steps)
        self.min_momentum = float(min_momentum)

    def current_momentum(self, step: Any = None) -> Any:
        ops = keras.ops
        step = ops.cast(self.iterations if step is None else step, "float32")
        half = max(1.0, 0.45 * self.total_steps)
        top, low = self.momentum, self.min_momentum
        down = top - (top - low) * step / half
        up = low + (top - low) * (step - half) / half
        return ops.where(step < half, down, ops.where(step < 2 * half, up, top))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        ops = keras.ops
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        momentum = ops.cast(self.current_momentum(), variable.dtype)
        step = ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate))
        self.assign(m, step)
        if self.nesterov:
            self.assign_add(
                variable,
                ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)),
            )
        else:
            self.assign_add(variable, m)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "total_steps": self.total_steps,
            "min_momentum": self.min_momentum,
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
    from worker.checkpoint import ResumableReduceLROnPlateau

    return ResumableReduceLROnPlateau(
        monitor="val_loss" if has_validation else "loss",
        factor=sched.factor,
        patience=sched.patience,
        min_lr=sched.min_learning_rate,
        verbose=0,
    )
