"""The top-level training spec (request body of POST /v1/jobs)."""

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from service.spec.common import (
    ActivationName,
    FiniteFloat,
    Initializer,
    MaxNorm,
    Regularizer,
    Strict,
)
from service.spec.layers import LayerSpec
from service.spec.losses import LossName, MetricName
from service.spec.optimizers import Nadam, OptimizerSpec
from service.spec.resources import Resources
from service.spec.schedules import ScheduleSpec
from service.spec.versions import SPEC_VERSION, upgrade

BUILTIN_DATASETS = ("digits", "iris", "breast_cancer", "wine")


class BuiltinDataset(Strict):
    builtin: Literal["digits", "iris", "breast_cancer", "wine"] = Field(
        description="A data set shipped with scikit-learn, served as it returns it."
    )


class DatasetRef(Strict):
    id: str = Field(min_length=1, max_length=64, description="Id of an uploaded data set.")


def _dataset_kind(value: Any) -> str:
    if isinstance(value, dict) and "builtin" in value:
        return "builtin"
    if isinstance(value, BuiltinDataset):
        return "builtin"
    return "id"


DatasetSpec = Annotated[
    Annotated[BuiltinDataset, Tag("builtin")] | Annotated[DatasetRef, Tag("id")],
    Discriminator(_dataset_kind),
]


class LayerDefaults(Strict):
    activation: ActivationName | None = Field(None, description="Default dense activation.")
    kernel_initializer: Initializer | None = Field(None, description="Default dense initializer.")
    kernel_regularizer: Regularizer | None = Field(None, description="Default regularizer.")
    kernel_constraint: MaxNorm | None = Field(None, description="Default kernel constraint.")


class ModelSpec(Strict):
    preset: Literal["default", "self_normalizing"] | None = Field(
        None,
        description="default: He init, ELU, batch norm when deep, early stopping; "
        "self_normalizing: LeCun init, SELU, standardised inputs, alpha dropout. Fills what "
        "the spec leaves open and refuses what contradicts it.",
    )
    defaults: LayerDefaults = Field(
        default_factory=LayerDefaults, description="Applied to every dense layer unless it says."
    )
    normalize_inputs: bool = Field(
        True, description="Start the model with a Normalization layer adapted on training rows."
    )
    layers: list[LayerSpec] = Field(
        min_length=1,
        max_length=10_000,
        description="The layers, input to output (KTS_MAX_LAYERS bounds them further).",
    )


class EarlyStopping(Strict):
    monitor: str = Field(
        "val_loss",
        pattern=r"^(val_)?[a-z_]{1,40}$",
        description="Quantity watched; val_ forms fall back to the training one without "
        "validation data.",
    )
    patience: int = Field(5, ge=0, le=10_000, description="Epochs without improvement to wait.")
    min_delta: FiniteFloat = Field(0.0, ge=0, description="Smallest change that counts.")
    restore_best_weights: bool = Field(True, description="Keep the best epoch's weights.")


class BaseModelRef(Strict):
    model_id: str = Field(
        min_length=1,
        max_length=300,
        description="A trained model's id, or NAME@ALIAS / NAME@VERSION / NAME@latest "
        "(pinned to the model's id when the job is submitted).",
    )
    reuse_layers: Literal["all_but_last"] | Annotated[int, Field(ge=1)] = Field(
        "all_but_last",
        description="Reuse all its layers but the last, or its first N (input layer not counted).",
    )
    clone: bool = Field(
        True, description="Copy the layers with their weights; the stored model never changes."
    )
    freeze: bool = Field(True, description="Reused layers are frozen unless phases say otherwise.")

    @field_validator("clone")
    @classmethod
    def _clone_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "Expected clone: true. Sharing the layers (clone: false) would let training "
                "this job change the stored base model's weights and predictions, which this "
                "service never does to a stored model."
            )
        return value


class Phase(Strict):
    epochs: int = Field(ge=1, description="Epochs of this phase.")
    freeze_base: bool | None = Field(
        None, description="Freeze the reused layers in this phase; default base_model.freeze."
    )
    learning_rate: FiniteFloat | None = Field(
        None, gt=0, description="Replaces optimizer.learning_rate and lr_schedule in this phase."
    )


class Pruning(Strict):
    target_sparsity: FiniteFloat = Field(
        gt=0, lt=1, description="Fraction of every dense kernel's weights set to exactly zero."
    )
    begin_epoch: int = Field(0, ge=0, description="Epoch (from 0) at whose start pruning begins.")
    end_epoch: int | None = Field(
        None, ge=1, description="Epoch at whose start the target is reached; default: epochs."
    )
    frequency: int = Field(
        100, ge=1, le=100_000, description="Batches between recomputations of the masks."
    )


class UncertaintySpec(Strict):
    mc_samples: int = Field(
        100, ge=1, le=1000, description="MC Dropout samples per validation row."
    )
    bins: int = Field(15, ge=2, le=100, description="Confidence bins of the calibration error.")


class TrainingSpec(Strict):
    """The request body of POST /v1/jobs."""

    spec_version: int = Field(
        SPEC_VERSION,
        ge=1,
        le=SPEC_VERSION,
        description="Version of the spec's format; older versions are upgraded before "
        "validation. Default: the current version.",
    )

    name: str | None = Field(None, max_length=200, description="Free-form job name.")
    dataset: DatasetSpec = Field(description='{"builtin": NAME} or {"id": DATASET_ID}.')
    validation_split: FiniteFloat = Field(
        0.1, ge=0, lt=1, description="Fraction of rows held out for validation."
    )
    model: ModelSpec = Field(description="The architecture.")
    base_model: BaseModelRef | None = Field(
        None, description="Transfer learning: start from a trained model's first layers."
    )
    optimizer: OptimizerSpec = Field(
        default_factory=lambda: Nadam(type="nadam"), description="The optimizer."
    )
    lr_schedule: ScheduleSpec | None = Field(None, description="Learning-rate schedule.")
    loss: LossName | None = Field(
        None, description="Loss; default inferred from the data set and the output layer."
    )
    metrics: list[MetricName] | None = Field(
        None, max_length=10, description="Default: accuracy (classification) or mae (regression)."
    )
    epochs: int = Field(10, ge=1, description="Number of epochs.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Rows per optimizer step.")
    early_stopping: EarlyStopping | None = Field(None, description="Stop when progress stalls.")
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="Seed for weights, split and shuffling."
    )
    uncertainty: UncertaintySpec = Field(
        default_factory=lambda: UncertaintySpec(),
        description="How uncertainty quality is measured on the validation rows after "
        "training (models with dropout only).",
    )
    max_runtime_seconds: int | None = Field(
        None, ge=1, le=30 * 24 * 3600, description="Wall-clock limit of the job."
    )
    phases: list[Phase] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="Train in phases (e.g. frozen head first, then fine-tune); replaces epochs.",
    )
    pruning: Pruning | None = Field(
        None,
        description="Magnitude pruning of every dense kernel along a cubic ramp during training.",
    )
    engine: Literal["auto", "compiled", "fit"] = Field(
        "auto",
        description="How epochs run: compiled (each epoch one jitted function over "
        "device-resident data; JAX backend), fit (Keras fit), or auto (compiled where the "
        "worker runs JAX). The job records which ran.",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(),
        description='What the job needs: {"accelerator": "gpu" | "cpu" | "any", "devices": N}; '
        "devices > 1 trains data parallel with Keras's distribution API (JAX backend).",
    )

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingSpec":
        if self.phases and self.base_model is None:
            for phase in self.phases:
                if phase.freeze_base is not None:
                    raise ValueError("Expected base_model when a phase sets freeze_base.")
        if self.pruning is not None:
            end = self.pruning.end_epoch or self.total_epochs()
            if not self.pruning.begin_epoch < end <= self.total_epochs():
                raise ValueError(
                    "Expected pruning.begin_epoch < pruning.end_epoch <= the job's epochs."
                )
        return self

    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases) if self.phases else self.epochs
