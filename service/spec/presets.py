"""The chapter's two default configurations, as presets that fill what a spec leaves open.

`default`: He initialisation, ELU, batch normalisation after each hidden dense layer when the
net is deep, early stopping. `self_normalizing`: LeCun initialisation, SELU, standardised
inputs, alpha dropout; it refuses what breaks self-normalisation.
"""

from typing import Any

from service.errors import ErrorDetail, SpecInvalid
from service.spec.layers import BatchNormalization, Dense
from service.spec.training import EarlyStopping, TrainingSpec

DEEP = 5  # hidden dense layers from which the default preset adds batch normalisation
SELU_OUTPUTS = ("softmax", "sigmoid", "linear", None)


def apply_preset(spec: TrainingSpec) -> TrainingSpec:
    """A new spec with the preset applied (the given one is never changed)."""
    if spec.model.preset == "default":
        return _default(spec)
    if spec.model.preset == "self_normalizing":
        return _self_normalizing(spec)
    return spec


def _default(spec: TrainingSpec) -> TrainingSpec:
    model = spec.model
    errors = [
        ErrorDetail(
            ("model", "layers", i),
            "alpha_dropout keeps SELU's self-normalisation; with the default preset "
            "(ELU, batch norm) use dropout.",
        )
        for i, layer in enumerate(model.layers)
        if layer.type == "alpha_dropout"
    ]
    if errors:
        raise SpecInvalid(errors)
    defaults = model.defaults.model_copy(
        update={
            "activation": model.defaults.activation or "elu",
            "kernel_initializer": model.defaults.kernel_initializer or "he_normal",
        }
    )
    layers = list(model.layers)
    dense = [i for i, layer in enumerate(layers) if layer.type == "dense"]
    has_bn = any(layer.type == "batch_normalization" for layer in layers)
    if len(dense) - 1 >= DEEP and not has_bn:
        for i in reversed(dense[:-1]):
            layers.insert(i + 1, BatchNormalization(type="batch_normalization"))
    update: dict[str, Any] = {
        "model": model.model_copy(update={"defaults": defaults, "layers": layers})
    }
    if spec.early_stopping is None:
        update["early_stopping"] = EarlyStopping(patience=10, restore_best_weights=True)
    return spec.model_copy(update=update)


def _self_normalizing(spec: TrainingSpec) -> TrainingSpec:
    model = spec.model
    errors: list[ErrorDetail] = []
    why = "breaks self-normalisation (preset self_normalizing)"
    if "normalize_inputs" in model.model_fields_set and not model.normalize_inputs:
        errors.append(ErrorDetail(("model", "normalize_inputs"), f"Unstandardised input {why}."))
    d = model.defaults
    if d.activation not in (None, "selu"):
        errors.append(
            ErrorDetail(("model", "defaults", "activation"), f"A non-SELU activation {why}.")
        )
    if d.kernel_initializer not in (None, "lecun_normal"):
        errors.append(
            ErrorDetail(
                ("model", "defaults", "kernel_initializer"),
                f"An initializer other than lecun_normal {why}.",
            )
        )
    if d.kernel_regularizer is not None:
        errors.append(ErrorDetail(("model", "defaults", "kernel_regularizer"), f"l1/l2 {why}."))
    dense = [i for i, layer in enumerate(model.layers) if layer.type == "dense"]
    last = dense[-1] if dense else -1
    for i, layer in enumerate(model.layers):
        loc = ("model", "layers", i)
        if layer.self_normalizing_conflict is not None:
            errors.append(ErrorDetail(loc, layer.self_normalizing_conflict))
        elif isinstance(layer, Dense):
            allowed = SELU_OUTPUTS if i == last else ("selu", None)
            if layer.activation not in allowed:
                errors.append(ErrorDetail((*loc, "activation"), f"A non-SELU activation {why}."))
            if layer.kernel_initializer not in (None, "lecun_normal"):
                errors.append(
                    ErrorDetail(
                        (*loc, "kernel_initializer"),
                        f"An initializer other than lecun_normal {why}.",
                    )
                )
            if layer.kernel_regularizer is not None:
                errors.append(ErrorDetail((*loc, "kernel_regularizer"), f"l1/l2 {why}."))
    if errors:
        raise SpecInvalid(errors)
    defaults = d.model_copy(update={"activation": "selu", "kernel_initializer": "lecun_normal"})
    new_model = model.model_copy(update={"defaults": defaults, "normalize_inputs": True})
    return spec.model_copy(update={"model": new_model})
