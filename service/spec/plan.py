"""Checks a spec against its data set and derives, without Keras, the model it builds.

The API answers `validate` and refuses bad specs from this plan; the worker builds the Keras
model from the same resolved layers, and a test checks both count parameters alike. Each
layer's shape and parameter rule is its spec class's own (service/spec/layers.py).
"""

import math
from dataclasses import dataclass
from typing import Any

from service.errors import ErrorDetail, SpecInvalid
from service.spec.layers import LayerBase
from service.spec.losses import CLASSIFICATION, LOSS_TASKS, METRIC_TASKS
from service.spec.presets import apply_preset
from service.spec.training import TrainingSpec

MAX_PARAMS = 200_000_000
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class DatasetMeta:
    """What a spec is checked against: shapes and task of the data set."""

    n_samples: int
    input_shape: tuple[int, ...]
    task: str  # "classification" | "regression"
    n_classes: int | None
    output_dim: int = 1


@dataclass
class LayerPlan:
    """One layer of the model: a spec layer (resolved), the input normalisation, or a layer
    reused from a base model."""

    name: str
    type: str
    spec: LayerBase | None  # None for "normalization" and "reused"
    output_shape: tuple[int, ...]
    trainable_params: int
    non_trainable_params: int
    class_name: str = ""
    frozen: bool = False

    @property
    def config(self) -> dict[str, Any]:
        """The resolved fields of a spec layer (defaults applied), as plain data."""
        return self.spec.model_dump(exclude={"name"}) if self.spec is not None else {}


@dataclass
class ModelPlan:
    spec: TrainingSpec  # with its preset applied: what the worker trains
    layers: list[LayerPlan]
    loss: str
    metrics: list[str]
    output_activation: str
    epochs: int

    def summary(self) -> dict[str, Any]:
        trainable = sum(layer.trainable_params for layer in self.layers)
        non_trainable = sum(layer.non_trainable_params for layer in self.layers)
        return {
            "total_params": trainable + non_trainable,
            "trainable_params": trainable,
            "non_trainable_params": non_trainable,
            "layers": [
                {
                    "name": layer.name,
                    "class_name": layer.class_name,
                    "output_shape": [None, *layer.output_shape],
                    "params": layer.trainable_params + layer.non_trainable_params,
                    "trainable": not layer.frozen,
                }
                for layer in self.layers
            ],
        }


@dataclass(frozen=True)
class Limits:
    max_units: int = 65_536
    max_layers: int = 200
    max_epochs: int = 10_000


def plan_model(
    spec: TrainingSpec,
    meta: DatasetMeta,
    *,
    max_units: int = 65_536,
    max_layers: int = 200,
    max_epochs: int = 10_000,
    base_layers: list[dict[str, Any]] | None = None,
) -> ModelPlan:
    """Resolve defaults, infer shapes and parameter counts; raise SpecInvalid with field paths.

    `base_layers` is the stored summary of `spec.base_model`, whose first layers are reused.
    """
    spec = apply_preset(spec)
    limits = Limits(max_units, max_layers, max_epochs)
    errors = _check_limits(spec, limits)
    plans, shape = _input_layers(spec, meta, base_layers or [])
    plans, shape = _spec_layers(spec, plans, shape, limits, errors)
    total = sum(p.trainable_params + p.non_trainable_params for p in plans)
    if total > MAX_PARAMS:
        errors.append(
            ErrorDetail(
                ("model", "layers"), f"Expected at most {MAX_PARAMS} parameters. Received: {total}"
            )
        )
    if errors:
        raise SpecInvalid(errors)
    out_act = _output_activation(plans)
    loss = _check_head(spec, meta, shape, out_act)
    metrics = _check_metrics(spec, meta, shape[0], out_act)
    _check_training(spec, meta, metrics)
    return ModelPlan(spec, plans, loss, metrics, out_act, spec.total_epochs())


def _check_limits(spec: TrainingSpec, limits: Limits) -> list[ErrorDetail]:
    errors = []
    if len(spec.model.layers) > limits.max_layers:
        errors.append(
            ErrorDetail(
                ("model", "layers"),
                f"Expected at most {limits.max_layers} layers. Received: {len(spec.model.layers)}",
            )
        )
    if spec.total_epochs() > limits.max_epochs:
        where = ("phases",) if spec.phases else ("epochs",)
        errors.append(ErrorDetail(where, f"Expected at most {limits.max_epochs} epochs in all."))
    return errors


def _input_layers(
    spec: TrainingSpec, meta: DatasetMeta, base_layers: list[dict[str, Any]]
) -> tuple[list[LayerPlan], tuple[int, ...]]:
    """The reused base layers, or the input normalisation, before the spec's own layers."""
    shape = tuple(meta.input_shape)
    if spec.base_model is not None:
        plans = _reused_layers(spec, base_layers)
        return plans, plans[-1].output_shape
    if spec.model.normalize_inputs:
        size = math.prod(shape)
        norm = LayerPlan("normalization", "normalization", None, shape, 0, 2 * size + 1)
        norm.class_name = "Normalization"
        return [norm], shape
    return [], shape


def _spec_layers(
    spec: TrainingSpec,
    plans: list[LayerPlan],
    shape: tuple[int, ...],
    limits: Limits,
    errors: list[ErrorDetail],
) -> tuple[list[LayerPlan], tuple[int, ...]]:
    names = _LayerNames({p.name for p in plans})
    for i, layer in enumerate(spec.model.layers):
        loc: Loc = ("model", "layers", i)
        name = names.take(layer.name, layer.type, loc, errors)
        resolved = layer.resolve(spec.model.defaults)
        units = getattr(resolved, "units", 0)
        if units > limits.max_units:
            errors.append(
                ErrorDetail((*loc, "units"), f"Expected at most {limits.max_units} units.")
            )
        trainable, non_trainable = resolved.param_counts(shape)
        shape = resolved.output_shape(shape)
        plans.append(
            LayerPlan(
                name, layer.type, resolved, shape, trainable, non_trainable, layer.keras_class
            )
        )
    return plans, shape


class _LayerNames:
    """Keras-style names (dense, dense_1, ...) that never collide with given or reused ones."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.used: dict[str, int] = {}

    def take(self, given: str | None, base: str, loc: Loc, errors: list[ErrorDetail]) -> str:
        if given:
            if given in self.taken:
                errors.append(ErrorDetail((*loc, "name"), f"Duplicate layer name: {given}"))
            self.taken.add(given)
            return given
        count = self.used.get(base, 0)
        name = base if count == 0 else f"{base}_{count}"
        while name in self.taken:
            count += 1
            name = f"{base}_{count}"
        self.used[base] = count + 1
        self.taken.add(name)
        return name


def _output_activation(layers: list[LayerPlan]) -> str:
    for layer in reversed(layers):
        if layer.spec is None:
            return layer.type
        activation = layer.spec.output_activation()
        if activation is not None:
            return activation
    return "linear"


def _reused_layers(spec: TrainingSpec, base_layers: list[dict[str, Any]]) -> list[LayerPlan]:
    """The base model's first layers, counted with the trainability of the last phase."""
    ref = spec.base_model
    assert ref is not None
    count = len(base_layers) - 1 if ref.reuse_layers == "all_but_last" else ref.reuse_layers
    if count < 1 or count > len(base_layers):
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("base_model", "reuse_layers"),
                    f"Expected between 1 and {len(base_layers)} layers (the base model has "
                    f"{len(base_layers)}). Received: {ref.reuse_layers}",
                )
            ]
        )
    frozen = ref.freeze
    if spec.phases and spec.phases[-1].freeze_base is not None:
        frozen = spec.phases[-1].freeze_base
    plans = []
    for layer in base_layers[:count]:
        params = int(layer["params"])
        own = int(layer.get("own_non_trainable_params", 0))
        trainable, non_trainable = (0, params) if frozen else (params - own, own)
        shape = tuple(int(d) for d in layer["output_shape"][1:])
        plans.append(
            LayerPlan(
                layer["name"],
                "reused",
                None,
                shape,
                trainable,
                non_trainable,
                layer["class_name"],
                frozen,
            )
        )
    return plans


def _last_units_loc(spec: TrainingSpec) -> Loc:
    for i in range(len(spec.model.layers) - 1, -1, -1):
        if spec.model.layers[i].type == "dense":
            return ("model", "layers", i, "units")
    return ("model", "layers")


def _invalid(loc: Loc, message: str) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(loc, message)])


def _check_head(spec: TrainingSpec, meta: DatasetMeta, shape: tuple[int, ...], out_act: str) -> str:
    """The loss: the spec's, checked against the output layer and the task, or inferred."""
    if len(shape) != 1:
        raise _invalid(
            ("model", "layers"),
            f"Expected the model's output to be one vector per row. Received: output shape "
            f"{list(shape)}; add a flatten layer before the dense layers.",
        )
    loss = spec.loss
    if loss is not None and LOSS_TASKS[loss] != meta.task:
        kind = (
            "a regression loss (mse, mae, huber)"
            if meta.task != CLASSIFICATION
            else ("a classification loss")
        )
        raise _invalid(
            ("loss",),
            f"Expected {kind} for a {meta.task} data set. Received: loss={loss}",
        )
    if meta.task == CLASSIFICATION:
        return _classification_loss(spec, meta, shape[0], out_act)
    if shape[0] != meta.output_dim:
        raise _invalid(
            _last_units_loc(spec),
            f"Expected {meta.output_dim} output units for this regression data set. "
            f"Received: units={shape[0]}",
        )
    if out_act in ("softmax", "sigmoid"):
        raise _invalid(
            ("model", "layers", len(spec.model.layers) - 1),
            f"Expected a linear output for regression. Received: activation={out_act}",
        )
    return loss or "mean_squared_error"


def _classification_loss(spec: TrainingSpec, meta: DatasetMeta, units: int, out_act: str) -> str:
    n = meta.n_classes or 2
    loss = spec.loss
    units_loc = _last_units_loc(spec)
    sigmoid_ok = units == 1 and n == 2 and out_act == "sigmoid"
    if loss is None:
        if units == n and out_act == "softmax":
            return "sparse_categorical_crossentropy"
        if sigmoid_ok:
            return "binary_crossentropy"
        raise _invalid(
            units_loc,
            f"Expected an output of {n} softmax units for this {n}-class data set"
            + (" (or 1 sigmoid unit)" if n == 2 else "")
            + f". Received: units={units}, activation={out_act}",
        )
    if loss == "binary_crossentropy":
        if not sigmoid_ok:
            raise _invalid(
                units_loc,
                "Expected 1 sigmoid output unit and a 2-class data set for binary_crossentropy. "
                f"Received: units={units}, activation={out_act}, classes={n}",
            )
        return loss
    if units != n:
        raise _invalid(
            units_loc,
            f"Expected {n} output units for this {n}-class data set. Received: units={units}",
        )
    if out_act != "softmax":
        raise _invalid(
            ("model", "layers", len(spec.model.layers) - 1),
            f"Expected a softmax output for {loss}. Received: activation={out_act}",
        )
    return loss


def _check_metrics(spec: TrainingSpec, meta: DatasetMeta, units: int, out_act: str) -> list[str]:
    default = ["accuracy"] if meta.task == CLASSIFICATION else ["mae"]
    metrics: list[str] = list(spec.metrics) if spec.metrics is not None else default
    for i, metric in enumerate(metrics):
        if meta.task not in METRIC_TASKS[metric]:
            raise _invalid(("metrics", i), f"Expected a regression metric. Received: {metric}")
        if metric == "auc" and not (units == 1 and out_act == "sigmoid"):
            raise _invalid(("metrics", i), "Expected a single sigmoid output for auc.")
    return metrics


def _check_training(spec: TrainingSpec, meta: DatasetMeta, metrics: list[str]) -> None:
    n_val = int(meta.n_samples * spec.validation_split)
    if spec.validation_split > 0 and n_val < 1:
        raise _invalid(
            ("validation_split",),
            f"Expected at least one validation row. Received: "
            f"{meta.n_samples} rows x {spec.validation_split}",
        )
    if meta.n_samples - n_val < 1:
        raise _invalid(("validation_split",), "Expected training rows to remain.")
    _check_devices(spec, meta.n_samples, n_val)
    if spec.early_stopping is not None:
        monitor = spec.early_stopping.monitor
        base = monitor.removeprefix("val_")
        if base != "loss" and base not in metrics:
            raise _invalid(
                ("early_stopping", "monitor"),
                "Expected loss, a metric of the spec, or their val_ form. Received: " + monitor,
            )


def _check_devices(spec: TrainingSpec, n_rows: int, n_val: int) -> None:
    """A job on several devices splits every batch, and the rows, evenly across them
    (worker/training/devices.py drops at most devices - 1 rows of each split)."""
    devices = spec.resources.devices
    if devices == 1:
        return
    if spec.batch_size % devices:
        raise _invalid(
            ("batch_size",),
            f"Expected a batch_size divisible by resources.devices ({devices}): batch_size is "
            f"the global batch, split evenly across the devices. "
            f"Received: batch_size={spec.batch_size}",
        )
    n_train = n_rows - n_val
    if n_train < devices:
        raise _invalid(
            ("resources", "devices"),
            f"Expected at least {devices} training rows, one per device. Received: "
            f"{n_train} training rows of {n_rows} for devices={devices}",
        )
    if spec.validation_split > 0 and n_val < devices:
        raise _invalid(
            ("validation_split",),
            f"Expected at least {devices} validation rows, one per device "
            f"(resources.devices={devices}). Received: {n_rows} rows x "
            f"{spec.validation_split} = {n_val} validation rows",
        )
