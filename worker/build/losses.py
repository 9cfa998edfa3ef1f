"""Loss and metric builders, one registered per name of service/spec/losses.py."""

from collections.abc import Callable
from typing import Any

import keras

LOSS_BUILDERS: dict[str, Callable[[], Any]] = {
    "sparse_categorical_crossentropy": lambda: "sparse_categorical_crossentropy",
    "categorical_crossentropy": lambda: "categorical_crossentropy",
    "binary_crossentropy": lambda: "binary_crossentropy",
    "mean_squared_error": lambda: "mean_squared_error",
    "mse": lambda: "mean_squared_error",
    "mean_absolute_error": lambda: "mean_absolute_error",
    "mae": lambda: "mean_absolute_error",
    "huber": lambda: "huber",
}
METRIC_BUILDERS: dict[str, Callable[[], Any]] = {
    "accuracy": lambda: "accuracy",
    "mae": lambda: "mae",
    "mse": lambda: "mse",
    "rmse": lambda: keras.metrics.RootMeanSquaredError(name="rmse"),
    "auc": lambda: keras.metrics.AUC(name="auc"),
}


def keras_loss(name: str) -> Any:
    """What `compile(loss=...)` takes for a spec's loss name (Keras's full name)."""
    return LOSS_BUILDERS[name]()


def keras_metrics(names: list[str]) -> list[Any]:
    return [METRIC_BUILDERS[name]() for name in names]
