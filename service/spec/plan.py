"""Checks a spec against its data set and derives, without TensorFlow, the model it builds.

The API answers `validate` and refuses bad specs from this plan; the worker builds the Keras
model from the same resolved layers, and a test checks both count parameters alike.
"""

import math
from dataclasses import dataclass
from typing import Any

from service.errors import ErrorDetail, SpecInvalid
from service.spec.layers import DROPOUT_TYPES
from service.spec.presets import apply_preset
from service.spec.training import TrainingSpec

CLASS_NAMES = {
    "dense": "Dense",
    "flatten": "Flatten",
    "batch_normalization": "BatchNormalization",
    "dropout": "Dropout",
    "alpha_dropout": "AlphaDropout",
    "activation": "Activation",
    "leaky_relu": "LeakyReLU",
    "prelu": "PReLU",
    "rrelu": "RReLU",
    "normalization": "Normalization",
}
CLASSIFICATION_LOSSES = {
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
}
REGRESSION_LOSSES = {"mean_squared_error", "mse", "mean_absolute_error", "mae", "huber"}
MAX_PARAMS = 200_000_000


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
    name: str
    type: str
    config: dict[str, Any]
    output_shape: tuple[int, ...]
    trainable_params: int
    non_trainable_params: int


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
                    "class_name": layer.config.get("class_name") or CLASS_NAMES[layer.type],
                    "output_shape": [None, *layer.output_shape],
                    "params": layer.trainable_params + layer.non_trainable_params,
                    "trainable": not layer.config.get("frozen", False),
                }
                for layer in self.layers
            ],
        }


def _resolved_dense(layer: Any, defaults: Any) -> dict[str, Any]:
    cfg = layer.model_dump(exclude={"name"})
    for key in ("activation", "kernel_initializer", "kernel_regularizer", "kernel_constraint"):
        if cfg[key] is None:
            value = getattr(defaults, key)
            cfg[key] = value.model_dump() if hasattr(value, "model_dump") else value
    cfg["activation"] = cfg["activation"] or "linear"
    cfg["kernel_initializer"] = cfg["kernel_initializer"] or "glorot_uniform"
    if cfg["activation"] == "logistic":
        cfg["activation"] = "sigmoid"
    return cfg


def _output_activation(layers: list[LayerPlan]) -> str:
    for layer in reversed(layers):
        if layer.type in DROPOUT_TYPES:
            continue
        if layer.type in ("dense", "activation"):
            return str(layer.config["activation"])
        return layer.type
    return "linear"


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
    errors: list[ErrorDetail] = []
    model = spec.model
    if len(model.layers) > max_layers:
        errors.append(
            ErrorDetail(
                ("model", "layers"),
                f"Expected at most {max_layers} layers. Received: {len(model.layers)}",
            )
        )
    epochs = spec.total_epochs()
    if epochs > max_epochs:
        where = ("phases",) if spec.phases else ("epochs",)
        errors.append(ErrorDetail(where, f"Expected at most {max_epochs} epochs in all."))

    shape = tuple(meta.input_shape)
    plans: list[LayerPlan] = []
    if spec.base_model is not None:
        plans = _reused_layers(spec, base_layers or [])
        shape = plans[-1].output_shape
    elif model.normalize_inputs:
        size = math.prod(shape)
        plans.append(LayerPlan("normalization", "normalization", {}, shape, 0, 2 * size + 1))

    used: dict[str, int] = {}
    names: set[str] = {p.name for p in plans}
    for i, layer in enumerate(model.layers):
        loc = ("model", "layers", i)
        if layer.name:
            name = layer.name
            if name in names:
                errors.append(ErrorDetail((*loc, "name"), f"Duplicate layer name: {name}"))
        else:
            base = layer.type
            count = used.get(base, 0)
            name = base if count == 0 else f"{base}_{count}"
            while name in names:
                count += 1
                name = f"{base}_{count}"
            used[base] = count + 1
        names.add(name)

        trainable = non_trainable = 0
        cfg: dict[str, Any] = layer.model_dump(exclude={"name"})
        if layer.type == "dense":
            cfg = _resolved_dense(layer, model.defaults)
            if layer.units > max_units:
                errors.append(ErrorDetail((*loc, "units"), f"Expected at most {max_units} units."))
            fan_in = shape[-1] if shape else 1
            trainable = fan_in * layer.units + (layer.units if layer.use_bias else 0)
            shape = (*shape[:-1], layer.units)
        elif layer.type == "flatten":
            shape = (math.prod(shape),)
        elif layer.type == "batch_normalization":
            features = shape[-1]
            trainable = features * (int(layer.center) + int(layer.scale))
            non_trainable = 2 * features
        elif layer.type == "prelu":
            trainable = math.prod(shape)
        elif layer.type == "activation" and cfg["activation"] == "logistic":
            cfg["activation"] = "sigmoid"
        plans.append(LayerPlan(name, layer.type, cfg, shape, trainable, non_trainable))

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
    loss, metrics = _check_head(spec, meta, plans, shape, out_act)
    _check_training(spec, meta, metrics)
    return ModelPlan(spec, plans, loss, metrics, out_act, epochs)


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
        plans.append(
            LayerPlan(
                layer["name"],
                "reused",
                {"class_name": layer["class_name"], "frozen": frozen},
                tuple(int(d) for d in layer["output_shape"][1:]),
                trainable,
                non_trainable,
            )
        )
    return plans


def _last_units_loc(spec: TrainingSpec) -> tuple[str | int, ...]:
    for i in range(len(spec.model.layers) - 1, -1, -1):
        if spec.model.layers[i].type == "dense":
            return ("model", "layers", i, "units")
    return ("model", "layers")


def _check_head(
    spec: TrainingSpec,
    meta: DatasetMeta,
    plans: list[LayerPlan],
    shape: tuple[int, ...],
    out_act: str,
) -> tuple[str, list[str]]:
    if len(shape) != 1:
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("model", "layers"),
                    f"Expected the model's output to be one vector per row. Received: output shape "
                    f"{list(shape)}; add a flatten layer before the dense layers.",
                )
            ]
        )
    units = shape[0]
    units_loc = _last_units_loc(spec)
    loss: str | None = spec.loss
    if meta.task == "classification":
        n = meta.n_classes or 2
        if loss is None:
            if units == n and out_act == "softmax":
                loss = "sparse_categorical_crossentropy"
            elif units == 1 and n == 2 and out_act == "sigmoid":
                loss = "binary_crossentropy"
            else:
                raise SpecInvalid(
                    [
                        ErrorDetail(
                            units_loc,
                            f"Expected an output of {n} softmax units for this {n}-class data set"
                            + (" (or 1 sigmoid unit)" if n == 2 else "")
                            + f". Received: units={units}, activation={out_act}",
                        )
                    ]
                )
        elif loss in REGRESSION_LOSSES:
            raise SpecInvalid(
                [
                    ErrorDetail(
                        ("loss",),
                        f"Expected a classification loss for a classification data set. "
                        f"Received: loss={loss}",
                    )
                ]
            )
        elif loss == "binary_crossentropy":
            if units != 1 or n != 2 or out_act != "sigmoid":
                raise SpecInvalid(
                    [
                        ErrorDetail(
                            units_loc,
                            "Expected 1 sigmoid output unit and a 2-class data set for "
                            f"binary_crossentropy. Received: units={units}, "
                            f"activation={out_act}, classes={n}",
                        )
                    ]
                )
        else:
            if units != n:
                raise SpecInvalid(
                    [
                        ErrorDetail(
                            units_loc,
                            f"Expected {n} output units for this {n}-class data set. "
                            f"Received: units={units}",
                        )
                    ]
                )
            if out_act != "softmax":
                raise SpecInvalid(
                    [
                        ErrorDetail(
                            ("model", "layers", len(spec.model.layers) - 1),
                            f"Expected a softmax output for {loss}. Received: activation={out_act}",
                        )
                    ]
                )
        default_metrics = ["accuracy"]
    else:
        if loss is None:
            loss = "mean_squared_error"
        elif loss in CLASSIFICATION_LOSSES:
            raise SpecInvalid(
                [
                    ErrorDetail(
                        ("loss",),
                        f"Expected a regression loss (mse, mae, huber) for a regression "
                        f"data set. Received: loss={loss}",
                    )
                ]
            )
        if units != meta.output_dim:
            raise SpecInvalid(
                [
                    ErrorDetail(
                        units_loc,
                        f"Expected {meta.output_dim} output units for this regression data "
                        f"set. Received: units={units}",
                    )
                ]
            )
        if out_act in ("softmax", "sigmoid"):
            raise SpecInvalid(
                [
                    ErrorDetail(
                        ("model", "layers", len(spec.model.layers) - 1),
                        f"Expected a linear output for regression. Received: activation={out_act}",
                    )
                ]
            )
        default_metrics = ["mae"]
    metrics: list[str] = list(spec.metrics) if spec.metrics is not None else default_metrics
    for i, metric in enumerate(metrics):
        if meta.task == "regression" and metric in ("accuracy", "auc"):
            raise SpecInvalid(
                [ErrorDetail(("metrics", i), f"Expected a regression metric. Received: {metric}")]
            )
        if metric == "auc" and not (units == 1 and out_act == "sigmoid"):
            raise SpecInvalid(
                [ErrorDetail(("metrics", i), "Expected a single sigmoid output for auc.")]
            )
    return loss, metrics


def _check_training(spec: TrainingSpec, meta: DatasetMeta, metrics: list[str]) -> None:
    n_val = int(meta.n_samples * spec.validation_split)
    if spec.validation_split > 0 and n_val < 1:
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("validation_split",),
                    f"Expected at least one validation row. Received: "
                    f"{meta.n_samples} rows x {spec.validation_split}",
                )
            ]
        )
    if meta.n_samples - n_val < 1:
        raise SpecInvalid([ErrorDetail(("validation_split",), "Expected training rows to remain.")])
    if spec.early_stopping is not None:
        monitor = spec.early_stopping.monitor
        base = monitor.removeprefix("val_")
        if base != "loss" and base not in metrics:
            raise SpecInvalid(
                [
                    ErrorDetail(
                        ("early_stopping", "monitor"),
                        "Expected loss, a metric of the spec, or their val_ form. "
                        f"Received: {monitor}",
                    )
                ]
            )
