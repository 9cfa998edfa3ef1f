"""Compression: deriving a smaller or faster model from a trained one (POST
/v1/models/{id}/optimize): the request, and the checks that need no Keras (the fold plan is
read from the .keras file's config.json). The work runs on the workers (worker/compression.py).
"""

import json
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from service.errors import ErrorDetail, SpecInvalid
from service.spec.common import FiniteFloat, Strict
from service.spec.resources import OneDeviceResources

# identity at inference: a fold crosses them
SKIPPABLE = ("Dropout", "AlphaDropout", "GaussianNoise", "GaussianDropout")


class PruneAndFineTune(Strict):
    target_sparsity: FiniteFloat = Field(gt=0, lt=1, description="Fraction of zeros per kernel.")
    epochs: int = Field(2, ge=1, le=1000, description="Fine-tuning epochs on the training rows.")
    learning_rate: FiniteFloat = Field(1e-4, gt=0, description="Adam's rate while fine-tuning.")


class CompressionRequest(Strict):
    fold_batch_norm: bool = Field(
        False, description="Fold every BatchNormalization into the neighbouring dense layer."
    )
    prune_below: FiniteFloat | None = Field(
        None, gt=0, description="Set dense kernel weights with |w| below this to zero."
    )
    prune: PruneAndFineTune | None = Field(
        None, description="Prune by magnitude along a ramp while fine-tuning."
    )
    weights: Literal["float32", "float16", "int8"] = Field(
        "float32", description="Storage type of the weights (int8: Keras quantization)."
    )
    resources: OneDeviceResources = Field(
        default_factory=lambda: OneDeviceResources(),
        description='Which workers may run it: {"accelerator": "gpu" | "cpu" | "any"}.',
    )

    @model_validator(mode="after")
    def _something(self) -> "CompressionRequest":
        if not (
            self.fold_batch_norm or self.prune_below or self.prune or self.weights != "float32"
        ):
            raise ValueError(
                "Expected at least one change: fold_batch_norm, prune_below, prune or weights."
            )
        return self


class CompressionJobSpec(CompressionRequest):
    """What an optimize job stores as its spec: the request and the model it starts from."""

    source_model_id: str = Field(max_length=64, description="The model to compress.")


def keras_layers(path: Path) -> list[dict[str, Any]]:
    """The layer configs of a stored Sequential model, read from its config.json."""
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    return [layer for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]


def fold_plan(layers: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """(batch-norm index, dense index, "into_previous" | "into_next") for every batch norm.

    A batch norm folds into the dense layer before it when that layer has no activation,
    otherwise into the next dense layer; dropout layers in between are crossed.
    """
    plan = []
    for i, layer in enumerate(layers):
        if layer["class_name"] != "BatchNormalization":
            continue
        j = i - 1
        while j >= 0 and layers[j]["class_name"] in SKIPPABLE:
            j -= 1
        if (
            j >= 0
            and layers[j]["class_name"] == "Dense"
            and layers[j]["config"].get("activation") == "linear"
        ):
            plan.append((i, j, "into_previous"))
            continue
        k = i + 1
        while k < len(layers) and layers[k]["class_name"] in SKIPPABLE:
            k += 1
        if k < len(layers) and layers[k]["class_name"] == "Dense":
            plan.append((i, k, "into_next"))
            continue
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("fold_batch_norm",),
                    f"Layer {layer['config'].get('name', i)} has no dense layer to fold into: "
                    "neither "
                    "a dense layer without activation before it nor a dense layer after it.",
                )
            ]
        )
    if not plan:
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("fold_batch_norm",), "The model has no BatchNormalization layer to fold."
                )
            ]
        )
    return plan
