"""Keras objects the service defines (Keras ships none of them), registered so that saved
models load in safe mode in every process that imports this module: the randomized leaky
ReLU layer, the 1cycle schedule and SGD whose momentum cycles with it.
"""

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kts")
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU (Xu et al. 2015); no library ships one for Keras 3.

    While training, each negative value gets a slope drawn uniformly in [lower, upper];
    at inference the slope is fixed to their mean.
    """

    def __init__(
        self, lower: float = 1 / 8, upper: float = 1 / 3, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.lower = float(lower)
        self.upper = float(upper)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        if training:
            slope = keras.random.uniform(
                ops.shape(inputs),
                self.lower,
                self.upper,
                dtype=inputs.dtype,
                seed=self.seed_generator,
            )
        else:
            slope = (self.lower + self.upper) / 2
        return ops.where(inputs >= 0, inputs, inputs * slope)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}


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
