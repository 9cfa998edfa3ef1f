"""The prediction path of the API process: the one place that loads Keras, on first use."""

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ErrorDetail, SpecInvalid
from service.models.schemas import PredictRequest
from service.rows import TrainedModel

_lock = threading.Lock()


def _cache(state: Any) -> "OrderedDict[str, Any]":
    if not hasattr(state, "predictors"):
        state.predictors = OrderedDict()
    return state.predictors  # type: ignore[no-any-return]


def get_predictor(state: Any, row: TrainedModel) -> Any:
    """A loaded model with its compiled plain and MC functions, kept in a bounded LRU cache."""
    from inference.sampler import Predictor  # imports Keras lazily

    cache = _cache(state)
    with _lock:
        predictor = cache.get(row.id)
        if predictor is not None:
            cache.move_to_end(row.id)
            return predictor
    predictor = Predictor.load(state.store.path(row.artifact_key), row.task)
    with _lock:
        cache[row.id] = predictor
        evict(cache, state.settings.model_cache_size, state.settings.model_cache_bytes)
    return predictor


def evict(cache: "OrderedDict[str, Any]", max_models: int, max_bytes: int) -> None:
    """Drop least recently used models past either bound (the newest always stays)."""
    while len(cache) > 1 and (
        len(cache) > max_models or sum(p.memory_bytes for p in cache.values()) > max_bytes
    ):
        cache.popitem(last=False)


def to_array(instances: list[Any], input_shape: list[int]) -> np.ndarray:
    try:
        X = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise SpecInvalid(
            [ErrorDetail(("instances",), "Expected rows of numbers of equal shape.")]
        ) from None
    if X.shape[1:] != tuple(input_shape):
        raise SpecInvalid(
            [
                ErrorDetail(
                    ("instances",),
                    f"Expected rows of shape {list(input_shape)}. "
                    f"Received: rows of shape {list(X.shape[1:])}",
                )
            ]
        )
    if not np.isfinite(X).all():
        raise SpecInvalid([ErrorDetail(("instances",), "Expected finite numbers.")])
    return X


def predict_rows(state: Any, row: TrainedModel, body: PredictRequest) -> list[Any]:
    X = to_array(body.instances, row.input_shape)
    predictor = get_predictor(state, row)
    if body.mc_samples == 0:
        return predictor.predict(X).tolist()  # type: ignore[no-any-return]
    return predictor.predict_mc(  # type: ignore[no-any-return]
        X, body.mc_samples, body.seed, return_samples=body.return_samples, interval=body.interval
    )


_export_lock = threading.Lock()


def export_path(state: Any, row: TrainedModel, fmt: str, quantize: str | None) -> Path:
    """The export file, made on first request and kept in the artifact store."""
    from inference.exports import ExportUnavailable, saved_model_zip, tflite

    name = "saved_model.zip" if fmt == "saved_model" else f"model-{quantize or 'float32'}.tflite"
    key = f"models/{row.id}/exports/{name}"
    path = state.store.path(key)
    with _export_lock:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            predictor = get_predictor(state, row)
            tmp = path.with_name(f".tmp-{name}")
            try:
                if fmt == "saved_model":
                    saved_model_zip(predictor, tmp)
                else:
                    tflite(predictor, tmp, quantize)
            except ExportUnavailable as exc:
                raise SpecInvalid([ErrorDetail(("format",), str(exc))]) from None
            tmp.replace(path)
    return path  # type: ignore[no-any-return]
