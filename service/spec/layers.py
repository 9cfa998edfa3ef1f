"""One spec class per layer type, registered once; `LayerSpec` is their discriminated union.

A layer type is one class here that carries everything the API needs to know about it (its
Keras class name, its shape and parameter rule, what it means for the presets and for
Monte-Carlo Dropout), and one builder registered under the same `type` in
worker/build/layers.py. tests/test_layer_registry.py fails when the two disagree.
"""

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, Union, get_args

from pydantic import Field, model_validator

from service.spec.common import (
    ActivationName,
    FiniteFloat,
    Initializer,
    MaxNorm,
    Regularizer,
    Strict,
)

Shape = tuple[int, ...]

_NAME = Field(
    None,
    pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
    description="Layer name in the built model; default: Keras-style type name with a counter.",
)
SELU_ONLY = "breaks self-normalisation (preset self_normalizing)"


class LayerBase(Strict):
    """What every layer type declares besides its fields."""

    keras_class: ClassVar[str]
    # dropout-like noise that Monte-Carlo predictions keep sampling at inference
    mc_sampled: ClassVar[bool] = False
    # why the self_normalizing preset refuses this type (None: compatible)
    self_normalizing_conflict: ClassVar[str | None] = None

    type: str
    name: str | None = _NAME

    def resolve(self, defaults: Any) -> Self:
        """The layer with model.defaults applied (only dense layers take defaults)."""
        return self

    def output_shape(self, shape: Shape) -> Shape:
        raise NotImplementedError

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        """(trainable, non-trainable) parameters for an input of this per-row shape."""
        raise NotImplementedError

    def output_activation(self) -> str | None:
        """The activation the model ends with when this is its last layer; None for layers
        that act only while training (the layer before them decides)."""
        return self.type


class _TrainingOnly(LayerBase):
    """Noise that acts only while training: shape kept, no weights, transparent at inference."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        return 0, 0

    def output_activation(self) -> str | None:
        return None


class _Elementwise(LayerBase):
    """Layers that keep the shape and have no weights."""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        return 0, 0


LAYER_TYPES: dict[str, type[LayerBase]] = {}


def layer_type(cls: type[LayerBase]) -> type[LayerBase]:
    """Register a spec class under the value of its `type` literal."""
    (name,) = get_args(cls.model_fields["type"].annotation)
    LAYER_TYPES[name] = cls
    return cls


@layer_type
class Dense(LayerBase):
    keras_class = "Dense"

    type: Literal["dense"] = Field(description="A fully connected layer.")
    units: int = Field(ge=1, le=1_048_576, description="Number of units.")
    activation: ActivationName | None = Field(
        None, description="Activation; default: model.defaults.activation, else linear."
    )
    kernel_initializer: Initializer | None = Field(
        None, description="Default: model.defaults.kernel_initializer, else glorot_uniform."
    )
    kernel_regularizer: Regularizer | None = Field(
        None, description="Default: model.defaults.kernel_regularizer, else none."
    )
    kernel_constraint: MaxNorm | None = Field(
        None, description="Default: model.defaults.kernel_constraint, else none."
    )
    use_bias: bool = Field(True, description="Whether the layer has a bias vector.")

    def resolve(self, defaults: Any) -> Self:
        update = {
            key: getattr(defaults, key)
            for key in (
                "activation",
                "kernel_initializer",
                "kernel_regularizer",
                "kernel_constraint",
            )
            if getattr(self, key) is None
        }
        resolved = self.model_copy(update=update)
        activation = resolved.activation or "linear"
        return resolved.model_copy(
            update={
                "activation": "sigmoid" if activation == "logistic" else activation,
                "kernel_initializer": resolved.kernel_initializer or "glorot_uniform",
            }
        )

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape[:-1], self.units)

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        fan_in = shape[-1] if shape else 1
        return fan_in * self.units + (self.units if self.use_bias else 0), 0

    def output_activation(self) -> str | None:
        return self.activation


@layer_type
class Flatten(LayerBase):
    keras_class = "Flatten"

    type: Literal["flatten"] = Field(description="Flattens each row to one vector.")

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        return 0, 0


@layer_type
class BatchNormalization(_Elementwise):
    keras_class = "BatchNormalization"
    self_normalizing_conflict = f"Batch normalisation {SELU_ONLY}; SELU normalises itself."

    type: Literal["batch_normalization"] = Field(description="Batch normalisation.")
    momentum: FiniteFloat = Field(0.99, gt=0, lt=1, description="Moving-average momentum.")
    epsilon: FiniteFloat = Field(0.001, gt=0, description="Added to the variance.")
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        features = shape[-1]
        return features * (int(self.center) + int(self.scale)), 2 * features


@layer_type
class Dropout(_TrainingOnly):
    keras_class = "Dropout"
    mc_sampled = True
    self_normalizing_conflict = f"Plain dropout {SELU_ONLY}: use alpha_dropout."

    type: Literal["dropout"] = Field(description="Dropout; sampled by Monte-Carlo predictions.")
    rate: FiniteFloat = Field(ge=0, lt=1, description="Fraction of inputs dropped.")


@layer_type
class AlphaDropout(_TrainingOnly):
    keras_class = "AlphaDropout"
    mc_sampled = True

    type: Literal["alpha_dropout"] = Field(description="Dropout that keeps SELU's statistics.")
    rate: FiniteFloat = Field(ge=0, lt=1, description="Fraction of inputs dropped.")


@layer_type
class GaussianNoise(_TrainingOnly):
    keras_class = "GaussianNoise"
    self_normalizing_conflict = f"Gaussian noise {SELU_ONLY}: use alpha_dropout."

    type: Literal["gaussian_noise"] = Field(
        description="Adds zero-mean Gaussian noise while training only (a regulariser)."
    )
    stddev: FiniteFloat = Field(
        gt=0, le=1, description="Standard deviation of the noise (Keras takes at most 1)."
    )


@layer_type
class GaussianDropout(_TrainingOnly):
    keras_class = "GaussianDropout"
    mc_sampled = True
    self_normalizing_conflict = f"Gaussian dropout {SELU_ONLY}: use alpha_dropout."

    type: Literal["gaussian_dropout"] = Field(
        description="Multiplies by 1-centred Gaussian noise of variance rate / (1 - rate) "
        "while training; sampled by Monte-Carlo predictions like dropout."
    )
    rate: FiniteFloat = Field(ge=0, lt=1, description="Equivalent dropout rate.")


_NON_SELU = f"A non-SELU activation layer {SELU_ONLY}."


@layer_type
class Activation(_Elementwise):
    keras_class = "Activation"
    self_normalizing_conflict = _NON_SELU

    type: Literal["activation"] = Field(description="A stand-alone activation.")
    activation: ActivationName = Field(description="The activation function.")

    def resolve(self, defaults: Any) -> Self:
        if self.activation == "logistic":
            return self.model_copy(update={"activation": "sigmoid"})
        return self

    def output_activation(self) -> str | None:
        return self.activation


@layer_type
class LeakyReLU(_Elementwise):
    keras_class = "LeakyReLU"
    self_normalizing_conflict = _NON_SELU

    type: Literal["leaky_relu"] = Field(description="Leaky ReLU with a fixed slope.")
    negative_slope: FiniteFloat = Field(0.3, ge=0, description="Slope for negative inputs.")


@layer_type
class PReLU(LayerBase):
    keras_class = "PReLU"
    self_normalizing_conflict = _NON_SELU

    type: Literal["prelu"] = Field(description="Parametric ReLU: the slope is learned per unit.")

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def param_counts(self, shape: Shape) -> tuple[int, int]:
        return math.prod(shape), 0


@layer_type
class RReLU(_Elementwise):
    keras_class = "RReLU"
    self_normalizing_conflict = _NON_SELU

    type: Literal["rrelu"] = Field(
        description="Randomized leaky ReLU: slope drawn in [lower, upper] per value while "
        "training, their mean at inference."
    )
    lower: FiniteFloat = Field(1 / 8, ge=0, le=1, description="Smallest negative slope.")
    upper: FiniteFloat = Field(1 / 3, ge=0, le=1, description="Largest negative slope.")

    @model_validator(mode="after")
    def _ordered(self) -> "RReLU":
        if self.lower > self.upper:
            raise ValueError("Expected lower <= upper.")
        return self


# Built from the registry, so that a registered class is a valid `type` without a second edit
# (type checkers see the common base class).
if TYPE_CHECKING:
    LayerSpec = LayerBase
else:
    LayerSpec = Annotated[Union[tuple(LAYER_TYPES.values())], Field(discriminator="type")]  # noqa: UP007
MC_SAMPLED_TYPES = tuple(name for name, cls in LAYER_TYPES.items() if cls.mc_sampled)
