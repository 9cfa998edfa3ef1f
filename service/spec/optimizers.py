"""One spec class per optimizer type; `OptimizerSpec` is their discriminated union."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from service.spec.common import FiniteFloat, Strict, types_of


class _Optimizer(Strict):
    learning_rate: FiniteFloat = Field(0.001, gt=0, description="Initial learning rate (lr0).")
    clipvalue: FiniteFloat | None = Field(None, gt=0, description="Clip each gradient value.")
    clipnorm: FiniteFloat | None = Field(None, gt=0, description="Clip each gradient's norm.")
    global_clipnorm: FiniteFloat | None = Field(
        None, gt=0, description="Clip the norm of all gradients together."
    )

    @model_validator(mode="after")
    def _one_clip(self) -> "_Optimizer":
        given = [n for n in ("clipvalue", "clipnorm", "global_clipnorm") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(
                "Expected at most one of clipvalue, clipnorm, global_clipnorm. "
                f"Received: {', '.join(given)}"
            )
        return self


class SGD(_Optimizer):
    type: Literal["sgd"] = Field(description="Stochastic gradient descent.")
    learning_rate: FiniteFloat = Field(0.01, gt=0, description="Initial learning rate (lr0).")
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1, description="Momentum (0.9 is usual).")
    nesterov: bool = Field(False, description="Nesterov accelerated gradient.")


class Adagrad(_Optimizer):
    type: Literal["adagrad"] = Field(description="AdaGrad.")
    initial_accumulator_value: FiniteFloat = Field(0.1, ge=0, description="Start of the sums.")
    epsilon: FiniteFloat = Field(1e-7, gt=0, description="Numerical stability term.")


class RMSprop(_Optimizer):
    type: Literal["rmsprop"] = Field(description="RMSProp.")
    rho: FiniteFloat = Field(0.9, gt=0, lt=1, description="Decay of the squared-gradient average.")
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1, description="Momentum.")
    epsilon: FiniteFloat = Field(1e-7, gt=0, description="Numerical stability term.")


class _AdamFamily(_Optimizer):
    beta_1: FiniteFloat = Field(0.9, gt=0, lt=1, description="Decay of the first moment.")
    beta_2: FiniteFloat = Field(0.999, gt=0, lt=1, description="Decay of the second moment.")
    epsilon: FiniteFloat = Field(1e-7, gt=0, description="Numerical stability term.")


class Adam(_AdamFamily):
    type: Literal["adam"] = Field(description="Adam.")
    amsgrad: bool = Field(False, description="AMSGrad variant.")


class Nadam(_AdamFamily):
    type: Literal["nadam"] = Field(description="Adam with Nesterov momentum.")


class Adamax(_AdamFamily):
    type: Literal["adamax"] = Field(description="Adam with the infinity norm.")


class AdamW(_AdamFamily):
    type: Literal["adamw"] = Field(description="Adam with decoupled weight decay.")
    weight_decay: FiniteFloat = Field(0.004, ge=0, description="Decoupled weight decay.")


OptimizerSpec = Annotated[
    SGD | Adagrad | RMSprop | Adam | Nadam | Adamax | AdamW, Field(discriminator="type")
]

OPTIMIZER_TYPES = types_of(OptimizerSpec)
