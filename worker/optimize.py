"""Optimize jobs: derive a new model by folding batch norm, pruning, or smaller weights,
and measure what it changed (outputs, accuracy, file size, single-row latency).
"""

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sqlalchemy import update

from inference.summary import has_dropout, model_summary
from service.jobs import get_model, training_job_of
from service.optimize import OptimizeRequest, fold_plan
from service.rows import Job, TrainedModel, new_id, utcnow
from service.spec import TrainingSpec
from worker.build.model import copy_model, finalize_normalization
from worker.context import WorkerContext
from worker.lease import Claim
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


def run_optimize(ctx: WorkerContext, job_id: str, claimed: Claim) -> str:
    spec_data = claimed.spec
    request = OptimizeRequest.model_validate(
        {k: v for k, v in spec_data.items() if k != "source_model_id"}
    )
    with ctx.session_factory() as session:
        source = get_model(session, spec_data["source_model_id"])
        train_job = training_job_of(session, source)
        train_spec = TrainingSpec.model_validate(train_job.spec) if train_job else None
    src_path = ctx.store.path(source.artifact_key)
    src = keras.saving.load_model(src_path, compile=False, safe_mode=True)

    X_eval = y_eval = X_train = y_train = None
    if train_spec is not None:
        arrays = load_arrays(ctx, train_spec)
        train_idx, val_idx = split(len(arrays.X), train_spec.validation_split, train_spec.seed)
        X_train, y_train = arrays.X[train_idx], arrays.y[train_idx]
        eval_idx = val_idx if len(val_idx) else train_idx[:1000]
        X_eval, y_eval = arrays.X[eval_idx], arrays.y[eval_idx]

    model = copy_model(src)
    steps: list[str] = []
    if request.prune is not None:
        assert X_train is not None and y_train is not None and train_spec is not None
        _fine_tune_prune(model, source.task, X_train, y_train, request.prune, train_spec.batch_size)
        steps.append("prune_and_fine_tune")
    if request.fold_batch_norm:
        model = fold_batch_norm(model)
        steps.append("fold_batch_norm")
    if request.prune_below is not None:
        prune_below(model, request.prune_below)
        steps.append("prune_below")
    pruning = (
        sparsity_report(model, request.prune.target_sparsity if request.prune else 0.0)
        if (request.prune or request.prune_below)
        else None
    )
    if request.weights == "float16":
        model = with_float16_weights(model)
        steps.append("float16_weights")
    elif request.weights == "int8":
        model.quantize("int8")
        steps.append("int8_weights")

    model_id = new_id()
    key = f"models/{model_id}/model.keras"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        ctx.store.put_file(key, path)
    report: dict[str, Any] = {
        "source_model_id": source.id,
        "steps": steps,
        "file_size_bytes": {
            "before": src_path.stat().st_size,
            "after": ctx.store.path(key).stat().st_size,
        },
    }
    metrics: dict[str, float | None] = {}
    if X_eval is not None and y_eval is not None:
        before = np.asarray(src.predict(X_eval, batch_size=1024, verbose=0), dtype=np.float64)
        after = np.asarray(model.predict(X_eval, batch_size=1024, verbose=0), dtype=np.float64)
        report["max_abs_output_difference"] = float(np.max(np.abs(after - before)))
        report["rows"] = int(len(X_eval))
        report["split"] = "validation" if train_spec and train_spec.validation_split else "train"
        if source.task == "classification":
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
    with ctx.session_factory() as session:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_owner == claimed.owner)
            .values(
                status="succeeded",
                finished_at=utcnow(),
                model_id=model_id,
                epoch=1,
                metrics=dict(metrics),
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return "lease_lost"
        session.add(
            TrainedModel(
                id=model_id,
                tenant=claimed.tenant,
                job_id=None,
                base_model_id=source.id,
                backend=keras.backend.backend(),
                task=source.task,
                n_classes=source.n_classes,
                input_shape=list(source.input_shape),
                has_dropout=has_dropout(model),
                summary=model_summary(model),
                metrics=metrics,
                pruning=pruning,
                optimization=report,
                artifact_key=key,
            )
        )
        session.commit()
    return "succeeded"
