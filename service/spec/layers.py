"""One spec class per layer type; `LayerSpec` is their discriminated union."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from service.spec.common import (
    ActivationName,
    FiniteFloat,
    Initializer,
    MaxNorm,
    Regularizer,
    Strict,
)

_NAME = Field(
    None,
    pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$",
    description="Layer name in the built model; default: Keras-style type name with a counter.",
)


class Dense(Strict):
    type: Literal["dense"] = Field(description="A fully connected layer.")
    units: int = Field(ge=1, description="Number of units.")
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
    name: str | None = _NAME


class Flatten(Strict):
    type: Literal["flatten"] = Field(description="Flattens each row to one vector.")
    name: str | None = _NAME


class BatchNormalization(Strict):
    type: Literal["batch_normalization"] = Field(description="Batch normalisation.")
    momentum: FiniteFloat = Field(0.99, gt=0, lt=1, description="Moving-average momentum.")
    epsilon: FiniteFloat = Field(0.001, gt=0, description="Added to the variance.")
    center: bool = Field(True, description="Learn an offset (beta).")
    scale: bool = Field(True, description="Learn a scale (gamma).")
    name: str | None = _NAME


class Dropout(Strict):
    type: Literal["dropout"] = Field(description="Dropout; sampled by Monte-Carlo predictions.")
    rate: FiniteFloat = Field(ge=0, lt=1, description="Fraction of inputs dropped.")
    name: str | None = _NAME


class AlphaDropout(Strict):
    type: Literal["alpha_dropout"] = Field(description="Dropout that keeps SELU's statistics.")
    rate: FiniteFloat = Field(ge=0, lt=1, description="Fraction of inputs dropped.")
    name: str | None = _NAME


class Activation(Strict):
    type: Literal["activation"] = Field(description="A stand-alone activation.")
    activation: ActivationName = Field(description="The activation function.")
    name: str | None = _NAME


class LeakyReLU(Strict):
    type: Literal["leaky_relu"] = Field(description="Leaky ReLU with a fixed slope.")
    negative_slope: FiniteFloat = Field(0.3, ge=0, description="Slope for negative inputs.")
    name: str | None = _NAME


class PReLU(Strict):
    type: Literal["prelu"] = Field(description="Parametric ReLU: the slope is learned per unit.")
    name: str | None = _NAME


class RReLU(Strict):
    type: Literal["rrelu"] = Field(
        description="Randomized leaky ReLU: slope drawn in [lower, upper] per value while "
        "training, their mean at inference."
    )
    lower: FiniteFloat = Field(1 / 8, ge=0, le=1, description="Smallest negative slope.")
    upper: FiniteFloat = Field(1 / 3, ge=0, le=1, description="Largest negative slope.")
    name: str | None = _NAME

    @model_validator(mode="after")
    def _ordered(self) -> "RReLU":
        if self.lower > self.upper:
            raise ValueError("Expected lower <= upper.")
        return self


LayerSpec = Annotated[
    Dense
    | Flatten
    | BatchNormalization
    | Dropout
    | AlphaDropout
    | Activation
    | LeakyReLU
    | PReLU
    | RReLU,
    Field(discriminator="type"),
]

DROPOUT_TYPES = ("dropout", "alpha_dropout")
