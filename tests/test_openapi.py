"""The OpenAPI document generated clients rely on: valid OpenAPI 3.1, the real error body on every
4xx/5xx, the bearer key scheme, a schema for every 2xx, and request examples that validate."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from service.app import create_app
from service.settings import Settings
from service.spec import TrainingSpec
from tests.conftest import make_spec, sqlite_settings

ROOT = Path(__file__).resolve().parent.parent
REF = "#/components/schemas/"
ERROR = {"$ref": REF + "ErrorResponse"}
METHODS = {"get", "put", "post", "delete", "patch"}
SPEC_ROUTES = [("post", "/v1/jobs"), ("post", "/v1/jobs/validate")]


@pytest.fixture
def doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    """A JSON Schema validator for components.schemas[name], its $refs resolved in `doc`."""
    return Draft202012Validator({"$ref": REF + name, "components": doc["components"]})


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_the_document_is_built_once(settings: Settings) -> None:
    app = create_app(settings)
    assert app.openapi() is app.openapi()


def readiness(path: str, status: str) -> bool:
    """Readiness routes answer 503 with their own body (their checks) when not ready."""
    return status == "503" and path.endswith(("/ready", "/readyz"))


def test_every_error_response_is_the_error_schema(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            if status[0] not in "45":
                continue
            schema = response["content"]["application/json"]["schema"]
            if readiness(path, status):
                assert schema == _success_schema(op) or ERROR in schema["anyOf"], (path, schema)
            else:
                assert response["content"] == {"application/json": {"schema": ERROR}}, (
                    method,
                    path,
                    status,
                )
    text = json.dumps(doc)
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]


def _success_schema(op: dict[str, Any]) -> Any:
    ok = next(r for s, r in op["responses"].items() if s[0] == "2")
    return ok["content"]["application/json"]["schema"]


def test_operations_list_the_errors_they_can_answer(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        statuses = set(op["responses"])
        if path.startswith("/v1/"):
            assert {"401", "503"} <= statuses, (method, path)
        if "{" in path:
            assert "404" in statuses, (method, path)
        if op.get("parameters") or "requestBody" in op:
            assert "422" in statuses, (method, path)
        if "application/json" in op.get("requestBody", {}).get("content", {}):
            assert "400" in statuses, (method, path)
        if path.endswith("/cancel"):
            assert "409" in statuses, (method, path)
    paths = doc["paths"]
    assert "409" in paths["/v1/jobs"]["post"]["responses"]  # Idempotency-Key reuse
    assert "409" in paths["/v1/batch-predictions/{batch_id}/results"]["get"]["responses"]
    assert "413" in paths["/v1/datasets"]["post"]["responses"]
    assert "Retry-After" in paths["/v1/jobs"]["get"]["responses"]["503"]["headers"]
    assert "WWW-Authenticate" in paths["/v1/jobs"]["get"]["responses"]["401"]["headers"]


PUBLIC = ("/healthz", "/readyz", "/v2/health/")


def test_the_bearer_scheme_covers_every_v1_route(doc: dict[str, Any]) -> None:
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, op in operations(doc):
        if path.startswith("/v1/"):
            assert op["security"] == [{"bearerAuth": []}], (method, path)
        if path.startswith(PUBLIC):
            assert "security" not in op, (method, path)
        assert ("security" in op) == ("401" in op["responses"]), (method, path)


def test_every_success_has_a_schema(doc: dict[str, Any]) -> None:
    for method, path, op in operations(doc):
        for status, response in op["responses"].items():
            if status[0] != "2" or status == "204":
                continue
            assert response.get("content"), (method, path, status)
            for media, body in response["content"].items():
                schema = body["schema"]
                assert schema and schema.get("additionalProperties") is not True, (path, media)
    paths = doc["paths"]

    def content(path: str, method: str = "get") -> dict[str, Any]:
        return next(r["content"] for s, r in paths[path][method]["responses"].items() if s < "3")

    assert set(content("/v1/jobs/{job_id}/events")) == {"text/event-stream"}
    artifact = content("/v1/models/{model_id}/artifact")
    assert artifact["application/zip"]["schema"]["format"] == "binary"
    assert content("/v1/models/{model_id}/predict", "post")["application/json"]["schema"] == {
        "$ref": REF + "PredictResponse"
    }
    results = content("/v1/batch-predictions/{batch_id}/results")
    assert {"application/json", "text/csv", "application/octet-stream"} <= set(results)
    assert content("/v1/jobs")["application/json"]["schema"] == {"$ref": REF + "JobReadPage"}


def example_files() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((ROOT / "examples").glob("*.json"))}


@pytest.mark.parametrize(("method", "path"), SPEC_ROUTES)
def test_the_spec_examples_validate(doc: dict[str, Any], method: str, path: str) -> None:
    media = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
    assert media["schema"] == {"$ref": REF + "TrainingSpec"}
    examples = media["examples"]
    assert set(examples) == set(example_files())
    spec_schema = validator(doc, "TrainingSpec")
    for name, example in examples.items():
        assert example["summary"], name
        TrainingSpec.model_validate(example["value"])
        errors = [e.message for e in spec_schema.iter_errors(example["value"])]
        assert not errors, (name, errors)
    assert not spec_schema.is_valid(make_spec(epoch=5))  # the schema does refuse


def test_real_error_bodies_match_the_error_schema(
    client: TestClient, doc: dict[str, Any], tmp_path: Path
) -> None:
    answers = [
        client.post("/v1/jobs/validate", json=make_spec(epoch=5)),
        client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}),
        client.get("/v1/jobs/unknown"),
        client.get("/v1/jobs", params={"limit": 0}),
    ]
    with TestClient(create_app(sqlite_settings(tmp_path, require_auth=True))) as keyed:
        answers.append(keyed.get("/v1/jobs"))
    assert [r.status_code for r in answers] == [422, 400, 404, 422, 401]
    error = validator(doc, "ErrorResponse")
    for r in answers:
        error.validate(r.json())


def test_real_answers_match_their_schemas(client: TestClient, doc: dict[str, Any]) -> None:
    for path, name in [
        ("/healthz", "Health"),
        ("/v1/jobs", "JobReadPage"),
        ("/v1/datasets", "DatasetReadPage"),
        ("/v1/batch-predictions", "BatchPredictionPage"),
    ]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        validator(doc, name).validate(r.json())
    r = client.post("/v1/jobs/validate", json=make_spec())
    validator(doc, "ValidateResult").validate(r.json())
