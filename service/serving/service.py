"""TensorFlow Serving and Open Inference Protocol v2 requests, read into rows and answered
through the one prediction path of /v1 predict (check_predict, the Predictor cache)."""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.errors import ErrorDetail, NotFound, SpecInvalid
from service.models import registry
from service.models.predictions import checked, predict_rows, to_array
from service.models.schemas import PredictOptions
from service.models.service import check_predict
from service.rows import TrainedModel
from service.serving.schemas import (
    InferInput,
    InferParameters,
    InferRequest,
    MetadataTensor,
    ModelMetadata,
    TFServingRequest,
)
from service.settings import Settings

INPUT_NAME = "input"  # the one input, as the v2 metadata names it
INPUT_NAMES = (INPUT_NAME, "x")  # "x": the SavedModel export's signature input
MC_SAMPLES = 100  # inference.exports.MC_SAMPLES: the mc_dropout signature's draws
Loc = tuple[str | int, ...]


def _invalid(loc: Loc, message: str) -> SpecInvalid:
    return SpecInvalid([ErrorDetail(loc, message)])


@contextmanager
def relocated(where: dict[str | int, Loc]) -> Iterator[None]:
    """Re-raise the shared checks' errors at this protocol's field (e.g. instances -> the
    tensor's data, mc_samples -> parameters.mc_samples)."""
    try:
        yield
    except SpecInvalid as exc:
        details = [
            ErrorDetail(where.get(d.loc[0], d.loc) if d.loc else d.loc, d.msg) for d in exc.details
        ]
        raise SpecInvalid(details, exc.message) from None


# --- Finding a model ---------------------------------------------------------------------


def find_model(session: Session, name: str, version: str | None, tenant: str) -> TrainedModel:
    """A registry name's latest version (or `version`), else a model id (or NAME@ALIAS)."""
    row = None
    if "@" not in name and (version is None or version.isdigit()):
        row = registry.resolve(session, f"{name}@{version or 'latest'}", tenant)
    if row is None:
        row = registry.resolve(session, name, tenant)
        if row is not None and version is not None and str(row.version) != version:
            row = None
    if row is None:
        which = f"{name[:100]} version {version[:20]}" if version is not None else name[:100]
        raise NotFound(f"No model has name or id {which}.")
    return row


def versions_of(session: Session, row: TrainedModel) -> list[str]:
    versions = session.scalars(
        select(TrainedModel.version)
        .where(TrainedModel.tenant == row.tenant, TrainedModel.name == row.name)
        .order_by(TrainedModel.version)
    )
    return [str(v) for v in versions]


def server_ready(state: Any) -> bool:
    """What inference needs: the database answers and the artifact store is there."""
    try:
        with state.session_factory() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return False
    return bool(state.store.is_writable())


def model_ready(state: Any, row: TrainedModel) -> bool:
    return bool(state.store.exists(row.artifact_key))


# --- Metadata ----------------------------------------------------------------------------


def _output_width(row: TrainedModel) -> list[int]:
    shape = row.summary["layers"][-1]["output_shape"][1:]
    return [-1 if d is None else int(d) for d in shape]


def mc_output_names(row: TrainedModel) -> list[str]:
    """The Monte-Carlo outputs of a model with dropout, in answer order."""
    if not row.has_dropout:
        return []
    if row.task != "classification":
        return ["mean", "std", "lower", "upper"]
    named = ["class_name"] if row.class_names else []
    return ["mean", "std", "class", *named, "predictive_entropy", "mutual_information"]


def _output_tensor(row: TrainedModel, name: str) -> MetadataTensor:
    if name == "predictions":
        return MetadataTensor(name=name, datatype="FP32", shape=[-1, *_output_width(row)])
    if name in ("mean", "std", "lower", "upper"):
        width = math.prod(d for d in _output_width(row) if d > 0)
        return MetadataTensor(name=name, datatype="FP64", shape=[-1, width])
    datatype = {"class": "INT64", "class_name": "BYTES"}.get(name, "FP64")
    return MetadataTensor(name=name, datatype=datatype, shape=[-1])


def metadata(row: TrainedModel, versions: list[str]) -> ModelMetadata:
    """The protocol's $metadata_model_response for one version."""
    inputs = [MetadataTensor(name=INPUT_NAME, datatype="FP32", shape=[-1, *row.input_shape])]
    names = ["predictions", *mc_output_names(row)]
    return ModelMetadata(
        name=row.name,
        versions=versions,
        platform="keras",
        inputs=inputs,
        outputs=[_output_tensor(row, n) for n in names],
    )


# --- TensorFlow Serving ------------------------------------------------------------------


def _named(value: Any, loc: Loc) -> Any:
    """The tensor of a {"input": tensor} object."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in INPUT_NAMES:
        raise _invalid(
            loc, f'Expected an object with one key, the input name: {{"{INPUT_NAME}": ...}}.'
        )
    return next(iter(value.values()))


def tfserving_rows(body: TFServingRequest, input_shape: list[int]) -> tuple[np.ndarray, bool]:
    """The request's rows, and whether it was columnar (`inputs`) rather than rows."""
    if (body.instances is None) == (body.inputs is None):
        field = "inputs" if body.instances is not None else "instances"
        raise _invalid(
            (field,), "Expected exactly one of instances (row format) or inputs (columnar format)."
        )
    if body.instances is not None:
        rows = body.instances
        if any(isinstance(r, dict) for r in rows):
            rows = [_named(r, ("instances", i)) for i, r in enumerate(rows)]
        return to_array(rows, input_shape), False
    tensor = _named(body.inputs, ("inputs",)) if isinstance(body.inputs, dict) else body.inputs
    with relocated({"instances": ("inputs",)}):
        return to_array(tensor, input_shape), True


def tfserving_options(row: TrainedModel, body: TFServingRequest) -> PredictOptions:
    if body.signature_name != "mc_dropout":
        return PredictOptions()
    if not row.has_dropout:
        raise _invalid(
            ("signature_name",),
            "This model has no dropout layers, so it has no mc_dropout signature: use "
            "serving_default.",
        )
    return PredictOptions(mc_samples=MC_SAMPLES, seed=body.seed)


def tfserving_predict(
    state: Any, row: TrainedModel, body: TFServingRequest, settings: Settings
) -> dict[str, Any]:
    """TensorFlow Serving's answer: {"predictions": per instance} or {"outputs": tensors}."""
    X, columnar = tfserving_rows(body, row.input_shape)
    options = tfserving_options(row, body)
    where: dict[str | int, Loc] = {"instances": ("inputs" if columnar else "instances",)}
    with relocated({**where, "mc_samples": ("signature_name",)}):
        check_predict(row, settings, options, len(X))
    answer = predict_rows(state, row, X, options)
    if options.mc_samples == 0:
        return {"outputs": answer} if columnar else {"predictions": answer}
    # the export's signature answers mean and std; classifiers add their class (and name)
    names = [k for k in ("mean", "std", "class", "class_name") if k in answer[0]]
    if columnar:
        return {"outputs": {k: [r[k] for r in answer] for k in names}}
    return {"predictions": [{k: r[k] for k in names} for r in answer]}


# --- Open Inference Protocol v2 ----------------------------------------------------------


def _values(tensor: InferInput, loc: Loc) -> np.ndarray:
    """The tensor's data as one flat float64 array, integers checked for INT datatypes."""
    try:
        values = np.asarray(tensor.data, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError, OverflowError):
        raise _invalid(loc, "Expected numbers, flat (row-major) or nested as the shape.") from None
    if tensor.datatype.startswith("INT"):
        bound = 2.0**31 if tensor.datatype == "INT32" else 2.0**63
        whole = np.isfinite(values) & (values == np.round(values)) & (np.abs(values) <= bound)
        if not whole.all():
            raise _invalid(loc, f"Expected integers for datatype {tensor.datatype}.")
    return values


def infer_rows(body: InferRequest, input_shape: list[int]) -> np.ndarray:
    """The one input tensor as float32 rows of the model's input shape."""
    if len(body.inputs) != 1:
        raise _invalid(("inputs",), f"Expected one input tensor, named {INPUT_NAME}.")
    tensor, loc = body.inputs[0], ("inputs", 0)
    if tensor.name not in INPUT_NAMES:
        raise _invalid((*loc, "name"), f"Expected the input name {INPUT_NAME}.")
    shape = list(tensor.shape)
    if shape[0] < 1 or shape[1:] != list(input_shape):
        raise _invalid(
            (*loc, "shape"),
            f"Expected shape [N, {', '.join(map(str, input_shape))}] with N >= 1 (the model's "
            f"input shape). Received: shape {shape}",
        )
    values = _values(tensor, (*loc, "data"))
    count = math.prod(shape)
    if values.size != count:
        raise _invalid(
            (*loc, "data"),
            f"Expected {count} values for shape {shape}. Received: {values.size} values",
        )
    with relocated({"instances": (*loc, "data")}):
        return checked(values.reshape(shape).astype(np.float32), input_shape)


def _why_not(name: str, mc_names: list[str], mc_samples: int) -> str:
    if name in mc_names and mc_samples == 0:
        return "Expected parameters.mc_samples > 0 for this output."
    if name in mc_names:
        return "Expected parameters.interval for this output."
    return f"Expected one of the model's outputs: {', '.join(['predictions', *mc_names])}."


def output_names(body: InferRequest, row: TrainedModel, params: InferParameters) -> list[str]:
    """The outputs to answer: those asked for, in order, else all that the request makes."""
    mc_names = mc_output_names(row)
    made = ["predictions"]
    if params.mc_samples > 0:
        made += [n for n in mc_names if n not in ("lower", "upper") or params.interval is not None]
    if body.outputs is None:
        return made
    names: list[str] = []
    for i, out in enumerate(body.outputs):
        if out.name not in made:
            raise _invalid(("outputs", i, "name"), _why_not(out.name, mc_names, params.mc_samples))
        if out.name not in names:
            names.append(out.name)
    return names


def mc_columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row MC statistics (predict_rows) as one column per output."""
    first = rows[0]
    columns: dict[str, Any] = {
        "mean": np.asarray([r["mean"] for r in rows], np.float64),
        "std": np.asarray([r["std"] for r in rows], np.float64),
    }
    if "class" in first:
        columns["class"] = np.asarray([r["class"] for r in rows], np.int64)
        for key in ("predictive_entropy", "mutual_information"):
            columns[key] = np.asarray([r[key] for r in rows], np.float64)
    if "class_name" in first:
        columns["class_name"] = [r["class_name"] for r in rows]
    if "interval" in first:
        for key in ("lower", "upper"):
            columns[key] = np.asarray([r["interval"][key] for r in rows], np.float64)
    return columns


def _tensor(name: str, column: Any) -> dict[str, Any]:
    """A $response_output: the column flat, row-major."""
    if isinstance(column, list):  # class names
        return {"name": name, "shape": [len(column)], "datatype": "BYTES", "data": column}
    datatype = {"float32": "FP32", "float64": "FP64", "int64": "INT64"}[column.dtype.name]
    return {
        "name": name,
        "shape": list(column.shape),
        "datatype": datatype,
        "data": column.reshape(-1),
    }


def infer(state: Any, row: TrainedModel, body: InferRequest, settings: Settings) -> dict[str, Any]:
    """The protocol's $inference_response (numpy arrays in `data`, for orjson)."""
    params = body.parameters or InferParameters()
    X = infer_rows(body, row.input_shape)
    options = PredictOptions(
        mc_samples=params.mc_samples, seed=params.seed, interval=params.interval
    )
    where: dict[str | int, Loc] = {
        "instances": ("inputs", 0, "shape"),
        "mc_samples": ("parameters", "mc_samples"),
        "interval": ("parameters", "interval"),
    }
    with relocated(where):
        check_predict(row, settings, options, len(X))
    names = output_names(body, row, params)
    columns: dict[str, Any] = {}
    if "predictions" in names:
        plain = predict_rows(state, row, X, PredictOptions())
        columns["predictions"] = np.asarray(plain, np.float32)
    if set(names) - {"predictions"}:
        columns.update(mc_columns(predict_rows(state, row, X, options)))
    answer: dict[str, Any] = {"model_name": row.name, "model_version": str(row.version)}
    if body.id is not None:
        answer["id"] = body.id
    answer["parameters"] = {"model_id": row.id, "mc_samples": options.mc_samples}
    answer["outputs"] = [_tensor(n, columns[n]) for n in names]
    return answer
