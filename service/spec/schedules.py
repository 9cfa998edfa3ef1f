"""One spec class per learning-rate schedule type; steps count batches over the whole job."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from service.spec.common import FiniteFloat, Strict, types_of


class Power(Strict):
    type: Literal["power"] = Field(description="lr0 / (1 + decay_rate * step / decay_steps).")
    decay_steps: int = Field(ge=1, description="Steps per unit of decay.")
    decay_rate: FiniteFloat = Field(1.0, ge=0, description="Decay rate.")


class Exponential(Strict):
    type: Literal["exponential"] = Field(description="lr0 * decay_rate ** (step / decay_steps).")
    decay_steps: int = Field(ge=1, description="Steps per unit of decay.")
    decay_rate: FiniteFloat = Field(0.1, gt=0, description="Factor per decay_steps.")


class Piecewise(Strict):
    type: Literal["piecewise"] = Field(description="Constant rates between step boundaries.")
    boundaries: list[int] = Field(
        min_length=1, max_length=10_000, description="Increasing optimizer steps."
    )
    values: list[Annotated[FiniteFloat, Field(gt=0)]] = Field(
        max_length=10_001, description="Rates; one more than boundaries."
    )

    @model_validator(mode="after")
    def _shape(self) -> "Piecewise":
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                "Expected len(values) == len(boundaries) + 1. "
                f"Received: {len(self.values)} values, {len(self.boundaries)} boundaries"
            )
        if any(b <= a for a, b in zip(self.boundaries, self.boundaries[1:], strict=False)):
            raise ValueError("Expected strictly increasing boundaries.")
        return self


class Performance(Strict):
    type: Literal["performance"] = Field(
        description="Multiply the rate by factor when the monitored loss stops improving."
    )
    factor: FiniteFloat = Field(0.5, gt=0, lt=1, description="Multiplier on a plateau.")
    patience: int = Field(5, ge=0, description="Epochs without improvement before reducing.")
    min_learning_rate: FiniteFloat = Field(0.0, ge=0, description="Floor of the rate.")


class OneCycle(Strict):
    type: Literal["one_cycle"] = Field(
        description="Rise for 45% of steps, fall back for 45%, then anneal (1cycle)."
    )
    max_learning_rate: FiniteFloat = Field(gt=0, description="Peak rate.")
    start_learning_rate: FiniteFloat | None = Field(
        None, gt=0, description="Starting rate; default max_learning_rate / 10."
    )
    last_learning_rate: FiniteFloat | None = Field(
        None, gt=0, description="Final rate; default start_learning_rate / 1000."
    )
    min_momentum: FiniteFloat = Field(
        0.85,
        ge=0,
        lt=1,
        description="With SGD momentum m, momentum cycles inversely from m down to this and "
        "back while the rate rises and falls.",
    )


ScheduleSpec = Annotated[
    Power | Exponential | Piecewise | Performance | OneCycle, Field(discriminator="type")
]

SCHEDULE_TYPES = types_of(ScheduleSpec)
