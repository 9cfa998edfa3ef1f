"""Request and response shapes of TensorFlow Serving's REST predict API and of the Open
Inference Protocol v2, as those protocols name their fields."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]

# --- TensorFlow Serving (POST /v1/models/{model_id}:predict) ---------------------------------


class TFServingRequest(BaseModel):
    """TensorFlow Serving's predict request: exactly one of `instances` or `inputs`."""

    model_config = ConfigDict(extra="forbid")

    signature_name: Literal["serving_default", "serve", "mc_dropout"] = Field(
        "serving_default",
        description="serving_default (or serve): plain predictions; mc_dropout: the mean and "
        "std of 100 Monte-Carlo-Dropout samples per instance, as the SavedModel export's "
        "signature of that name.",
    )
    instances: list[Any] | None = Field(
        None,
        min_length=1,
        description='Row format: a list of rows, or of {"input": row} objects.',
    )
    inputs: Any = Field(
        None,
        description='Columnar format: a tensor of rows, or {"input": tensor}.',
    )
    seed: Seed | None = Field(
        None, description="This service's addition: makes mc_dropout answers repeatable."
    )


class TFServingRows(BaseModel):
    """Row-format answer: one entry per instance (a list of outputs, or named outputs)."""

    predictions: list[Any]


class TFServingColumns(BaseModel):
    """Columnar answer: the output tensor, or {"mean": tensor, "std": tensor, ...}."""

    outputs: Any


# --- Open Inference Protocol v2 (/v2/...) --------------------------------------------------

Datatype = Literal["FP32", "FP64", "INT32", "INT64"]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="FP32, FP64, INT64 or BYTES.")
    shape: list[int] = Field(description="-1 for a dimension of any size (the batch).")


class ModelMetadata(BaseModel):
    name: str = Field(description="The registry name.")
    versions: list[str] = Field(description="Every version of the name, oldest first.")
    platform: str = Field(description="keras")
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor] = Field(
        description="predictions; for a model with dropout, the Monte-Carlo statistics too."
    )


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, description="input (as the metadata names it).")
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=32, description="[N, ...the model's input shape]."
    )
    datatype: Datatype = Field(description="The data's element type.")
    data: list[Any] = Field(description="The values, flat (row-major) or nested as the shape.")


class OutputParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    binary_data: Literal[False] = Field(
        False, description="Binary tensor data is not supported: false (as clients send it)."
    )


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, description="An output the metadata names.")
    parameters: OutputParameters | None = None


class InferParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mc_samples: int = Field(0, ge=0, description="Monte-Carlo-Dropout samples; 0 = plain.")
    seed: Seed | None = Field(None, description="Makes Monte-Carlo answers repeatable.")
    interval: float | None = Field(
        None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Regression: the central interval of the samples (lower, upper outputs).",
    )
    binary_data_output: Literal[False] = Field(
        False, description="Binary tensor data is not supported: false (as clients send it)."
    )


class InferRequest(BaseModel):
    """The protocol's $inference_request."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256, description="Echoed in the answer.")
    parameters: InferParameters | None = None
    inputs: list[InferInput] = Field(min_length=1, description="One tensor, named input.")
    outputs: list[RequestedOutput] | None = Field(
        None, min_length=1, description="The outputs to return (default: all of them)."
    )


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="FP32, FP64, INT64 or BYTES.")
    data: list[Any] = Field(description="Flat, row-major.")


class InferResponse(BaseModel):
    """The protocol's $inference_response."""

    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's id, when it had one.")
    parameters: dict[str, Any] = Field(description="model_id and mc_samples of the answer.")
    outputs: list[InferOutput]
