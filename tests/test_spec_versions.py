"""Spec versions: old specs are upgraded by registered steps before validation, and a
version-1 spec (sent, or stored by an older release) still trains."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.jobs.service import new_job
from service.spec import SPEC_VERSION, TrainingSpec
from service.spec.versions import UPGRADES, upgrade
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job

V1_SPEC = json.loads((Path(__file__).parent / "data" / "spec_v1.json").read_text())


def test_every_older_version_has_an_upgrade_step() -> None:
    assert set(UPGRADES) == set(range(1, SPEC_VERSION))


def test_v1_uncertainty_samples_becomes_the_uncertainty_object() -> None:
    spec = TrainingSpec.model_validate(V1_SPEC)
    assert spec.spec_version == SPEC_VERSION
    assert spec.uncertainty.mc_samples == 20
    assert "uncertainty_samples" not in spec.model_dump()
    assert upgrade(spec.model_dump(mode="json")) == spec.model_dump(mode="json")  # idempotent


def test_a_newer_version_than_this_code_knows_is_422(client: TestClient) -> None:
    r = client.post("/v1/jobs/validate", json={**V1_SPEC, "spec_version": SPEC_VERSION + 1})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["spec_version"]


def test_v1_spec_sent_today_trains(client: TestClient, ctx: WorkerContext) -> None:
    r = client.post("/v1/jobs", json=V1_SPEC)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["uncertainty"]["mc_samples"] == 20
    assert run_job(ctx, r.json()["id"]) == "succeeded"


@pytest.mark.parametrize("with_version_key", [True, False])
def test_v1_spec_stored_by_an_older_release_trains(
    client: TestClient, ctx: WorkerContext, with_version_key: bool
) -> None:
    stored = (
        dict(V1_SPEC)
        if with_version_key
        else {k: v for k, v in V1_SPEC.items() if k != "spec_version"}
    )
    with ctx.session_factory() as session:
        job = new_job(session, "default", "old", "train", stored, 2)
        job.spec_version = 1
        session.commit()
        job_id = job.id
    read = client.get(f"/v1/jobs/{job_id}").json()
    assert read["spec_version"] == 1
    assert read["spec"]["uncertainty"]["mc_samples"] == 20  # shown in today's version
    assert "uncertainty_samples" not in read["spec"]
    assert run_job(ctx, job_id) == "succeeded"
    model = client.get(f"/v1/models/{client.get(f'/v1/jobs/{job_id}').json()['model_id']}")
    assert model.json()["uncertainty"]["mc_samples"] == 20
