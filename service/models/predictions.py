"""The prediction path of the API process: the one place that loads Keras, on first use."""

import io
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from service.datasets.arrays import npy_header
from service.errors import ErrorDetail, SpecInvalid
from service.metrics.instruments import predict_instruments
from service.models.schemas import PredictOptions
from service.rows import TrainedModel
from service.storage import disk_full_as_storage_full

_lock = threading.Lock()


def _cache(state: Any) -> "OrderedDict[str, Any]":
    if not hasattr(state, "predictors"):
        state.predictors = OrderedDict()
    return state.predictors  # type: ignore[no-any-return]


def get_predictor(state: Any, row: TrainedModel) -> Any:
    """A loaded model with its compiled plain and MC functions, kept in a bounded LRU cache."""
    from inference.sampler import Predictor  # imports Keras lazily

    cache, meter = _cache(state), predict_instruments(state)
    with _lock:
        predictor = cache.get(row.id)
        if predictor is not None:
            cache.move_to_end(row.id)
            meter.cache_hits.inc()
            return predictor
    meter.cache_misses.inc()
    with state.store.local_file(row.artifact_key) as path:
        predictor = Predictor.load(path, row.task)
    with _lock:
        cache[row.id] = predictor
        gone = evict(cache, state.settings.model_cache_size, state.settings.model_cache_bytes)
        meter.cached(cache, gone)
    return predictor


def evict(cache: "OrderedDict[str, Any]", max_models: int, max_bytes: int) -> list[str]:
    """Drop least recently used models past either bound (the newest always stays); return
    the ids dropped."""
    dropped = []
    while len(cache) > 1 and (
        len(cache) > max_models or sum(p.memory_bytes for p in cache.values()) > max_bytes
    ):
        dropped.append(cache.popitem(last=False)[0])
    return dropped


def to_array(instances: list[Any], input_shape: list[int]) -> np.ndarray:
    """JSON rows as a float32 array of the model's input shape."""
    try:
        X = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise _invalid("Expected rows of numbers of equal shape.") from None
    return checked(X, input_shape)


def from_npy(body: bytes, input_shape: list[int], max_rows: int) -> np.ndarray:
    """One .npy array (application/x-npy), its header checked before anything is allocated."""
    stream = io.BytesIO(body)
    try:
        shape, fortran, dtype = npy_header(stream)
    except (ValueError, OSError, EOFError):
        raise _invalid("Expected one .npy array (numpy.save) as the body.") from None
    if dtype.hasobject or dtype.kind not in "fiub" or not shape:
        raise _invalid(f"Expected a numeric array of rows. Received: dtype {dtype}, shape {shape}")
    if shape[0] > max_rows:
        raise _invalid(f"Expected at most {max_rows} instances.")
    if tuple(shape[1:]) != tuple(input_shape):
        raise _invalid(f"Expected rows of shape {list(input_shape)}. Received: {list(shape)}")
    count = int(np.prod(shape))
    data = body[stream.tell() :]
    if len(data) != count * dtype.itemsize:
        raise _invalid("The .npy body is shorter or longer than its header says.")
    X = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return checked(np.ascontiguousarray(X, dtype=np.float32), input_shape)


def checked(X: np.ndarray, input_shape: list[int]) -> np.ndarray:
    if X.ndim < 1 or X.shape[1:] != tuple(input_shape):
        raise _invalid(
            f"Expected rows of shape {list(input_shape)}. "
            f"Received: rows of shape {list(X.shape[1:])}"
        )
    if len(X) == 0:
        raise _invalid("Expected at least one instance.")
    if not np.isfinite(X).all():
        raise _invalid("Expected finite numbers.")
    return X


def _invalid(message: str) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(("instances",), message)])


def predict_rows(state: Any, row: TrainedModel, X: np.ndarray, options: PredictOptions) -> Any:
    """Plain outputs (rows x outputs), or one dict of MC statistics per row (with
    `class_name` beside `class` when the model has class names)."""
    predictor = get_predictor(state, row)
    started = time.perf_counter()
    if options.mc_samples == 0:
        answer = predictor.predict(X)
    else:
        rows = predictor.predict_mc(
            X,
            options.mc_samples,
            options.seed,
            return_samples=options.return_samples,
            interval=options.interval,
        )
        answer = with_class_names(rows, row.class_names)
    seconds = time.perf_counter() - started
    with _lock:  # a model evicted meanwhile keeps no latency series (a bounded label set)
        if row.id in _cache(state):
            predict_instruments(state).observe(row.id, options.mc_samples, len(X), seconds)
    return answer


def with_class_names(rows: list[dict[str, Any]], names: list[str] | None) -> list[dict[str, Any]]:
    """Each MC row with `class_name` right after `class` (null for an index past the names)."""
    if not names:
        return rows
    out = []
    for row in rows:
        named: dict[str, Any] = {}
        for key, value in row.items():
            named[key] = value
            if key == "class":
                named["class_name"] = names[value] if 0 <= value < len(names) else None
        out.append(named)
    return out


_export_lock = threading.Lock()


def export_key(state: Any, row: TrainedModel, fmt: str, quantize: str | None) -> str:
    """The export's artifact key; the file is made on first request and kept in the store."""
    from inference.exports import ExportUnavailable, export_file

    name = "saved_model.zip" if fmt == "saved_model" else f"model-{quantize or 'float32'}.tflite"
    key = f"models/{row.id}/exports/{name}"
    store = state.store
    with _export_lock:
        if store.exists(key):
            return key
        # made in scratch and stored whole: a half-written export never shows
        with store.local_file(row.artifact_key) as source, store.scratch() as folder:
            try:
                with disk_full_as_storage_full():
                    export_file(source, row.task, fmt, quantize, folder / name)
            except ExportUnavailable as exc:
                raise SpecInvalid([ErrorDetail(("format",), str(exc))]) from None
            store.put_file(key, folder / name)
    return key


def predict_limiter(state: Any) -> Any:
    """The threads predictions run in (KTS_PREDICT_THREADS): many large requests queue here
    instead of taking every thread of the server's pool."""
    import anyio

    if not hasattr(state, "predict_limiter"):
        state.predict_limiter = anyio.CapacityLimiter(state.settings.predict_threads)
    return state.predict_limiter
