"""Compression ("optimize" jobs): derive a new model by folding batch norm, pruning, or
smaller weights, and measure what it changed (outputs, accuracy, file size, single-row latency).
"""

import statistics
import time
from typing import Any

import keras
import numpy as np

from service.models.compression import CompressionJobSpec, CompressionRequest, fold_plan
from service.models.service import get_model, training_job_of
from service.spec import TrainingSpec
from worker.build.model import copy_model, finalize_normalization
from worker.jobs.lifecycle import JobRun, runs
from worker.training.data import load_arrays, split
from worker.training.pruning import MagnitudePruning, dense_kernels, sparsity_report


def fold_batch_norm(model: keras.Model) -> keras.Model:
    """A model without BatchNormalization layers and the same plain predictions (exact math)."""
    layers = list(model.layers)
    plan = fold_plan(
        [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in layers]
    )
    weights = {
        i: [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]
        for i, layer in enumerate(layers)
    }
    configs = {i: layer.get_config() for i, layer in enumerate(layers)}
    for bn_index, dense_index, direction in plan:
        bn = layers[bn_index]
        params = list(weights[bn_index])
        gamma = params.pop(0) if bn.scale else 1.0
        beta = params.pop(0) if bn.center else 0.0
        mean, var = params
        a = gamma / np.sqrt(var + bn.epsilon)
        c = beta - mean * a
        kernel, *rest = weights[dense_index]
        bias = rest[0] if rest else np.zeros(kernel.shape[-1])
        if direction == "into_previous":
            kernel, bias = kernel * a, bias * a + c
        else:
            kernel, bias = a[:, None] * kernel, bias + c @ kernel
        weights[dense_index] = [kernel, bias]
        configs[dense_index] = {**configs[dense_index], "use_bias": True}
    folded = {bn for bn, _, _ in plan}
    keep = [i for i in range(len(layers)) if i not in folded]
    new_layers = [type(layers[i]).from_config(configs[i]) for i in keep]
    new = keras.Sequential(
        [keras.Input(tuple(model.inputs[0].shape[1:])), *new_layers], name=model.name
    )
    for i, layer in zip(keep, new_layers, strict=True):
        layer.set_weights([w.astype(np.float32) for w in weights[i]])
    finalize_normalization(new)
    return new


def prune_below(model: keras.Model, threshold: float) -> None:
    for _, kernel in dense_kernels(model):
        w = keras.ops.convert_to_numpy(kernel)
        kernel.assign(np.where(np.abs(w) < threshold, 0, w).astype(w.dtype))


def with_float16_weights(model: keras.Model) -> keras.Model:
    layers = [
        type(layer).from_config({**layer.get_config(), "dtype": "float16"})
        for layer in model.layers
    ]
    new = keras.Sequential(
        [keras.Input(tuple(model.inputs[0].shape[1:])), *layers], name=model.name
    )
    for old, layer in zip(model.layers, layers, strict=True):
        layer.set_weights([np.asarray(w).astype(np.float16) for w in old.get_weights()])
    finalize_normalization(new)
    return new


def single_row_latency_ms(model: keras.Model, row: np.ndarray, runs: int = 50) -> float:
    for _ in range(5):
        model.predict_on_batch(row)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.predict_on_batch(row)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def _accuracy(outputs: np.ndarray, y: np.ndarray) -> float:
    predicted = (outputs[:, 0] > 0.5).astype(int) if outputs.shape[-1] == 1 else outputs.argmax(1)
    return float(np.mean(predicted == y))


def _fine_tune_prune(
    model: keras.Model, task: str, X: np.ndarray, y: np.ndarray, prune: Any, batch_size: int
) -> None:
    if task == "classification":
        loss = (
            "binary_crossentropy"
            if model.outputs[0].shape[-1] == 1
            else "sparse_categorical_crossentropy"
        )
        targets = y.astype(np.float32) if loss == "binary_crossentropy" else y
    else:
        loss, targets = "mean_squared_error", y
    model.compile(optimizer=keras.optimizers.Adam(prune.learning_rate), loss=loss)
    steps = int(np.ceil(len(X) / batch_size))
    end = max(1, prune.epochs - 1) * steps  # reach the target a little before the end
    model.fit(
        X,
        targets,
        epochs=prune.epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[MagnitudePruning(prune.target_sparsity, 0, end, frequency=max(1, steps // 4))],
    )


@runs("optimize")
def run_compression(run: JobRun) -> str:
    request = CompressionJobSpec.model_validate(run.claim.spec)
    with run.ctx.session_factory() as session:
        source = get_model(session, request.source_model_id)
        train_job = training_job_of(session, source)
        train_spec = (
            TrainingSpec.model_validate({**train_job.spec, "spec_version": train_job.spec_version})
            if train_job
            else None
        )
    with run.ctx.store.local_file(source.artifact_key) as src_path:
        src = keras.saving.load_model(src_path, compile=False, safe_mode=True)
    rows = _rows(run, train_spec)
    model, steps, pruning = _compress(src, request, source.task, rows, train_spec)
    row = run.save_model(
        model,
        name=source.name,  # a new version of the same registered model
        class_names=source.class_names,
        job_id=None,
        base_model_id=source.id,
        task=source.task,
        n_classes=source.n_classes,
        pruning=pruning,
    )
    report: dict[str, Any] = {
        "source_model_id": source.id,
        "steps": steps,
        "file_size_bytes": {
            "before": run.ctx.store.size(source.artifact_key),
            "after": run.ctx.store.size(row.artifact_key),
        },
    }
    metrics = _measure(src, model, source.task, rows, train_spec, report)
    row.metrics, row.optimization = metrics, report
    return run.succeed(row, epoch=1, metrics=dict(metrics))


Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None


def _rows(run: JobRun, train_spec: TrainingSpec | None) -> Rows:
    """(X_train, y_train, X_eval, y_eval) of the source's training data, when known."""
    if train_spec is None:
        return None
    arrays = load_arrays(run.ctx, train_spec)
    train_idx, val_idx = split(len(arrays.X), train_spec.validation_split, train_spec.seed)
    eval_idx = val_idx if len(val_idx) else train_idx[:1000]
    return arrays.X[train_idx], arrays.y[train_idx], arrays.X[eval_idx], arrays.y[eval_idx]


def _compress(
    src: keras.Model,
    request: CompressionRequest,
    task: str,
    rows: Rows,
    train_spec: TrainingSpec | None,
) -> tuple[keras.Model, list[str], dict[str, Any] | None]:
    model = copy_model(src)
    steps: list[str] = []
    if request.prune is not None:
        assert rows is not None and train_spec is not None
        _fine_tune_prune(model, task, rows[0], rows[1], request.prune, train_spec.batch_size)
        steps.append("prune_and_fine_tune")
    if request.fold_batch_norm:
        model = fold_batch_norm(model)
        steps.append("fold_batch_norm")
    if request.prune_below is not None:
        prune_below(model, request.prune_below)
        steps.append("prune_below")
    pruning = None
    if request.prune or request.prune_below:
        pruning = sparsity_report(model, request.prune.target_sparsity if request.prune else 0.0)
    if request.weights == "float16":
        model = with_float16_weights(model)
        steps.append("float16_weights")
    elif request.weights == "int8":
        model.quantize("int8")
        steps.append("int8_weights")
    return model, steps, pruning


def _measure(
    src: keras.Model,
    model: keras.Model,
    task: str,
    rows: Rows,
    train_spec: TrainingSpec | None,
    report: dict[str, Any],
) -> dict[str, float | None]:
    """Output difference, accuracy and latency before and after, on the evaluation rows."""
    metrics: dict[str, float | None] = {}
    if rows is None:
        return metrics
    X_eval, y_eval = rows[2], rows[3]
    before = np.asarray(src.predict(X_eval, batch_size=1024, verbose=0), dtype=np.float64)
    after = np.asarray(model.predict(X_eval, batch_size=1024, verbose=0), dtype=np.float64)
    report["max_abs_output_difference"] = float(np.max(np.abs(after - before)))
    report["rows"] = int(len(X_eval))
    report["split"] = "validation" if train_spec and train_spec.validation_split else "train"
    if task == "classification":
        report["accuracy"] = {
            "before": _accuracy(before, y_eval),
            "after": _accuracy(after, y_eval),
        }
        metrics["val_accuracy"] = report["accuracy"]["after"]
    row = X_eval[:1]
    report["single_row_latency_ms"] = {
        "before": single_row_latency_ms(src, row),
        "after": single_row_latency_ms(model, row),
    }
    return metrics
