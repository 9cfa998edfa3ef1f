"""Errors that help: the closest field or value, the optimizers that take a field, where the JSON
breaks; and never more than 100 characters of the user's input repeated."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_spec

OUTPUT = {"type": "dense", "units": 10, "activation": "softmax"}


def refused(client: TestClient, body: dict[str, Any]) -> tuple[str, list[Any]]:
    """The message and the locs of the 422 that /v1/jobs/validate answers for `body`."""
    r = client.post("/v1/jobs/validate", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error"
    assert err["message"] == err["details"][0]["msg"]
    return err["message"], [d["loc"] for d in err["details"]]


def with_layer(layer: dict[str, Any]) -> dict[str, Any]:
    return make_spec(model={"layers": [layer, OUTPUT]})


HINTS = [
    ("top-level field", make_spec(epoch=5), ["epoch"], "did you mean 'epochs'?"),
    (
        "dense field",
        with_layer({"type": "dense", "units": 5, "unit": 5}),
        ["model", "layers", 0, "unit"],
        "did you mean 'units'?",
    ),
    (
        "nested object field",
        make_spec(early_stopping={"patiense": 3}),
        ["early_stopping", "patiense"],
        "did you mean 'patience'?",
    ),
    (
        "activation value",
        with_layer({"type": "dense", "units": 5, "activation": "reluu"}),
        ["model", "layers", 0, "activation"],
        "did you mean 'relu'?",
    ),
    (
        "initializer name",
        with_layer({"type": "dense", "units": 5, "kernel_initializer": "he_norml"}),
        ["model", "layers", 0, "kernel_initializer"],
        "did you mean 'he_normal'?",
    ),
    ("loss name", make_spec(loss="sparse_categorical_crossentropi"), ["loss"], "did you mean"),
    ("layer type", with_layer({"type": "denes", "units": 5}), ["model", "layers", 0], "'dense'"),
    (
        "optimizer type",
        make_spec(optimizer={"type": "adamm"}),
        ["optimizer"],
        "did you mean 'adam'?",
    ),
    (
        "optimizer field of other optimizers",
        make_spec(optimizer={"type": "adam", "momentum": 0.9}),
        ["optimizer", "momentum"],
        "momentum is a field of sgd, rmsprop (not adam)",
    ),
    (
        "layer field of other layers",
        with_layer({"type": "dense", "units": 5, "rate": 0.2}),
        ["model", "layers", 0, "rate"],
        "rate is a field of dropout, alpha_dropout, gaussian_dropout (not dense)",
    ),
    (
        "schedule field of other schedules",
        make_spec(lr_schedule={"type": "one_cycle", "max_learning_rate": 0.1, "decay_steps": 9}),
        ["lr_schedule", "decay_steps"],
        "decay_steps is a field of power, exponential (not one_cycle)",
    ),
]


@pytest.mark.parametrize(("case", "body", "loc", "hint"), HINTS, ids=[case for case, *_ in HINTS])
def test_a_refusal_suggests_the_closest_name(
    client: TestClient, case: str, body: dict[str, Any], loc: list[Any], hint: str
) -> None:
    message, locs = refused(client, body)
    assert loc in locs, (case, locs)
    assert hint in message, (case, message)


def test_an_unknown_layer_type_is_not_echoed(client: TestClient) -> None:
    message, _ = refused(client, with_layer({"type": "denes", "units": 5}))
    assert "denes" not in message
    assert "did you mean 'dense'?" in message


def test_no_hint_without_a_close_name(client: TestClient) -> None:
    message, locs = refused(client, make_spec(colour="red"))
    assert locs == [["colour"]]
    assert "did you mean" not in message
    assert "epochs" in message  # the fields it could have been


def test_invalid_json_says_line_and_column(client: TestClient) -> None:
    raw = b'{\n  "name": "x",\n  "epochs" 3\n}'
    r = client.post("/v1/jobs/validate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_json"
    assert err["message"].startswith("The request body is not valid JSON: line 3, column 12: ")
    assert err["details"] == []


def test_invalid_json_of_predict_says_where(client: TestClient) -> None:
    r = client.post(
        "/v1/models/nope/predict",
        content=b'{"instances": [[1, 2],',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "line 1, column 23" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        make_spec(**{"z" * 500: 1}),
        make_spec(**{"epochs" + "s" * 500: 1}),
        with_layer({"type": "q" * 500}),
        with_layer({"type": "dense", "units": 5, "activation": "r" * 500}),
        make_spec(optimizer={"type": "adam", "m" * 500: 1}),
    ],
    ids=["unknown field", "near-miss field", "layer type", "activation", "optimizer field"],
)
def test_no_message_repeats_more_than_100_characters_of_input(
    client: TestClient, body: dict[str, Any]
) -> None:
    r = client.post("/v1/jobs/validate", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    for message in [err["message"], *(d["msg"] for d in err["details"])]:
        for char in "zsqrm":
            assert char * 101 not in message, message
