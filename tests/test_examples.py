"""Every example spec validates, trains through the service's job runner, and learns."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = sorted(p.stem for p in EXAMPLES.glob("*.json"))


def quick(spec: dict[str, Any]) -> dict[str, Any]:
    """The same spec with few epochs, so the whole set trains in well under a minute."""
    spec = {**spec, "epochs": 3}
    if spec.get("phases"):
        spec["phases"] = [{**p, "epochs": 2} for p in spec["phases"]]
    return spec


def train(client: TestClient, ctx: WorkerContext, spec: dict[str, Any]) -> dict[str, Any]:
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded", client.get(f"/v1/jobs/{job_id}").json()["error"]
    return dict(client.get(f"/v1/jobs/{job_id}").json())


def test_there_is_an_example_per_technique() -> None:
    assert len(NAMES) >= 30


@pytest.mark.parametrize("name", [n for n in NAMES if n != "transfer_b_from_a"])
def test_example_trains(client: TestClient, ctx: WorkerContext, name: str) -> None:
    spec = json.loads((EXAMPLES / f"{name}.json").read_text())
    job = train(client, ctx, quick(spec))
    assert job["metrics"]["val_accuracy"] > 0.5, (name, job["history"])


def test_transfer_example_reuses_model_a(client: TestClient, ctx: WorkerContext) -> None:
    a = train(client, ctx, quick(json.loads((EXAMPLES / "transfer_a.json").read_text())))
    text = (EXAMPLES / "transfer_b_from_a.json").read_text()
    spec = json.loads(text.replace("${BASE_MODEL_ID}", a["model_id"]))
    b = train(client, ctx, quick(spec))
    model = client.get(f"/v1/models/{b['model_id']}").json()
    assert model["base_model_id"] == a["model_id"]
    assert b["metrics"]["val_accuracy"] > 0.5
