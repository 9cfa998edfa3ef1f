"""Pieces shared by layers and defaults: activations, initializers, regularizers, constraints."""

from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

# "logistic" is the chapter's name for the sigmoid; both are accepted.
ActivationName = Literal[
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "tanh",
    "sigmoid",
    "logistic",
    "softmax",
    "linear",
    "gelu",
    "swish",
    "softplus",
]

InitializerName = Literal[
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "orthogonal",
    "zeros",
    "ones",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    """Base of every spec class: unknown fields are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class VarianceScaling(Strict):
    type: Literal["variance_scaling"] = Field(description="Keras VarianceScaling initializer.")
    scale: FiniteFloat = Field(1.0, gt=0, description="Scaling factor (2.0 for He init).")
    mode: Literal["fan_in", "fan_out", "fan_avg"] = Field(
        "fan_in", description="Which fan the variance is divided by."
    )
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = Field(
        "truncated_normal", description="Distribution the weights are drawn from."
    )


Initializer = Annotated[
    InitializerName | VarianceScaling,
    Field(description="A Keras initializer name, or a variance_scaling object."),
]


class Regularizer(Strict):
    l1: FiniteFloat | None = Field(None, ge=0, description="L1 penalty factor.")
    l2: FiniteFloat | None = Field(None, ge=0, description="L2 penalty factor.")

    @model_validator(mode="after")
    def _one_at_least(self) -> "Regularizer":
        if self.l1 is None and self.l2 is None:
            raise ValueError("Expected at least one of l1, l2.")
        return self


class MaxNorm(Strict):
    max_norm: FiniteFloat = Field(gt=0, description="Largest allowed norm of each unit's weights.")
    axis: int = Field(0, ge=-2, le=1, description="Kernel axis the norm is taken along.")


def types_of(union: Any) -> dict[str, type[BaseModel]]:
    """The classes of a discriminated union by their `type` value, for the registry tests."""
    members = get_args(get_args(union)[0]) if get_origin(union) is Annotated else get_args(union)
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in members}
