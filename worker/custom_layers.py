"""Layers Keras does not ship, registered so that saved models load (safe mode included)."""

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
