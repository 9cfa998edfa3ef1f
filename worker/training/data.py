"""Data for the worker: a spec's rows, the train/validation split, targets in the loss's form."""

import keras
import numpy as np

from service.datasets.arrays import Arrays, load_builtin
from service.datasets.arrays import load_arrays as load_stored
from service.datasets.service import get_dataset
from service.spec import TrainingSpec
from service.spec.training import BuiltinDataset
from worker.context import WorkerContext


def load_arrays(ctx: WorkerContext, spec: TrainingSpec) -> Arrays:
    if isinstance(spec.dataset, BuiltinDataset):
        return load_builtin(spec.dataset.builtin)
    with ctx.session_factory() as session:
        row = get_dataset(session, spec.dataset.id)
        key, class_names = row.artifact_key, row.class_names
    arrays = load_stored(ctx.store, key)
    return Arrays(arrays.X, arrays.y, class_names)


def split(n: int, fraction: float, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation indices (Keras's validation_split takes the last rows)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(n * fraction)
    return order[n_val:], order[:n_val]


def targets(y: np.ndarray, loss: str, n_classes: int | None) -> np.ndarray:
    if loss == "categorical_crossentropy":
        return keras.utils.to_categorical(y, n_classes)
    if loss == "binary_crossentropy":
        return y.astype(np.float32)
    return y
