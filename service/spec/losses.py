"""Losses and metrics a spec may name, registered once with the task they fit.

The worker's builders for them are in worker/build/losses.py, registered under the same names;
tests/test_layer_registry.py checks both registries agree.
"""

from typing import TYPE_CHECKING, Literal

CLASSIFICATION, REGRESSION = "classification", "regression"

LOSS_TASKS: dict[str, str] = {
    "sparse_categorical_crossentropy": CLASSIFICATION,
    "categorical_crossentropy": CLASSIFICATION,
    "binary_crossentropy": CLASSIFICATION,
    "mean_squared_error": REGRESSION,
    "mse": REGRESSION,
    "mean_absolute_error": REGRESSION,
    "mae": REGRESSION,
    "huber": REGRESSION,
}
METRIC_TASKS: dict[str, tuple[str, ...]] = {
    "accuracy": (CLASSIFICATION,),
    "auc": (CLASSIFICATION,),
    "mae": (CLASSIFICATION, REGRESSION),
    "mse": (CLASSIFICATION, REGRESSION),
    "rmse": (CLASSIFICATION, REGRESSION),
}

if TYPE_CHECKING:
    LossName = str
    MetricName = str
else:  # the registries above are the one list of names
    LossName = Literal[tuple(LOSS_TASKS)]
    MetricName = Literal[tuple(METRIC_TASKS)]
