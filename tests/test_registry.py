"""The model registry: names and versions, aliases that move, tags, filters, references
(NAME@ALIAS, NAME@VERSION, NAME@latest) wherever an id goes, and deletion with its 409s."""

import io

import numpy as np
from fastapi.testclient import TestClient

from service.datasets.arrays import load_builtin
from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def _train(client: TestClient, ctx: WorkerContext, **overrides: object) -> dict:
    job_id = submit(client, make_spec(**{"name": "digits-mlp", "epochs": 1, **overrides}))
    assert run_job(ctx, job_id) == "succeeded"
    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    return dict(client.get(f"/v1/models/{model_id}").json())


def test_versions_aliases_and_references(client: TestClient, ctx: WorkerContext) -> None:
    v1, v2 = _train(client, ctx), _train(client, ctx, seed=8)
    assert (v1["name"], v1["version"], v2["version"]) == ("digits-mlp", 1, 2)
    assert v1["class_names"] == [str(i) for i in range(10)]
    r = client.put(f"/v1/models/{v1['id']}/aliases/champion")
    assert r.status_code == 200 and r.json()["aliases"] == ["champion"]
    assert client.get("/v1/models/digits-mlp@champion").json()["id"] == v1["id"]
    moved = client.put("/v1/models/digits-mlp@2/aliases/champion").json()  # moves, atomically
    assert moved["id"] == v2["id"] and moved["aliases"] == ["champion"]
    assert client.get(f"/v1/models/{v1['id']}").json()["aliases"] == []
    assert client.get("/v1/models/digits-mlp@latest").json()["id"] == v2["id"]
    assert client.get("/v1/models/digits-mlp@1").json()["id"] == v1["id"]
    rows = load_builtin("digits").X[:3].tolist()
    body = {"instances": rows, "mc_samples": 100, "seed": 1}
    by_alias = client.post("/v1/models/digits-mlp@champion/predict", json=body)
    assert by_alias.status_code == 200
    assert (
        by_alias.json()["predictions"]
        == client.post(f"/v1/models/{v2['id']}/predict", json=body).json()["predictions"]
    )
    assert client.get("/v1/models/digits-mlp@nope").status_code == 404
    assert client.put(f"/v1/models/{v1['id']}/aliases/7up").status_code == 422
    assert client.put(f"/v1/models/{v1['id']}/aliases/latest").status_code == 422
    assert client.delete("/v1/models/digits-mlp@champion/aliases/champion").status_code == 204
    assert client.get("/v1/models/digits-mlp@champion").status_code == 404


def test_list_filters_and_tags(client: TestClient, ctx: WorkerContext) -> None:
    v1, v2 = _train(client, ctx), _train(client, ctx, name="other")
    r = client.put(f"/v1/models/{v1['id']}/tags", json={"tags": {"stage": "prod", "team": "a"}})
    assert r.status_code == 200 and r.json()["tags"] == {"stage": "prod", "team": "a"}
    client.put(f"/v1/models/{v2['id']}/aliases/champion")

    def ids(**params: str) -> list[str]:
        return [m["id"] for m in client.get("/v1/models", params=params).json()["items"]]

    assert ids() == [v2["id"], v1["id"]]  # newest first
    assert ids(name="digits-mlp") == [v1["id"]]
    assert ids(tag="stage:prod") == [v1["id"]] and ids(tag="stage:dev") == []
    assert ids(alias="champion") == [v2["id"]]
    assert ids(job_id=v2["job_id"]) == [v2["id"]]
    assert client.get("/v1/models", params={"tag": "no-colon"}).status_code == 422


def test_base_model_by_reference_is_pinned_to_its_id(
    client: TestClient, ctx: WorkerContext
) -> None:
    base = _train(client, ctx)
    client.put(f"/v1/models/{base['id']}/aliases/champion")
    spec = make_spec(
        name="transfer",
        epochs=1,
        base_model={"model_id": "digits-mlp@champion"},
        model={"layers": [{"type": "dense", "units": 10, "activation": "softmax"}]},
    )
    assert client.post("/v1/jobs/validate", json=spec).status_code == 200
    job = client.post("/v1/jobs", json=spec).json()
    assert job["spec"]["base_model"]["model_id"] == base["id"]


def test_deletes_and_their_conflicts(client: TestClient, ctx: WorkerContext) -> None:
    base = _train(client, ctx)
    derived = client.post(f"/v1/models/{base['id']}/optimize", json={"weights": "float16"}).json()
    assert client.delete(f"/v1/models/{base['id']}").status_code == 409  # an optimize job is queued
    assert run_job(ctx, derived["id"]) == "succeeded"
    r = client.delete(f"/v1/models/{base['id']}")
    assert r.status_code == 409 and "derived" in r.json()["error"]["message"]
    new_id = client.get(f"/v1/jobs/{derived['id']}").json()["model_id"]
    assert client.delete(f"/v1/models/{new_id}").status_code == 204
    assert client.get(f"/v1/models/{new_id}").status_code == 404
    assert not (ctx.store.root / "models" / new_id).exists()
    assert client.delete(f"/v1/models/{base['id']}").status_code == 204

    X, y = load_builtin("digits").X, load_builtin("digits").y
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    dataset = client.post("/v1/datasets", files={"file": ("d.npz", buf.getvalue())}).json()
    queued = submit(client, make_spec(dataset={"id": dataset["id"]}))
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 409
    assert client.delete(f"/v1/jobs/{queued}").status_code == 409  # not ended
    assert client.post(f"/v1/jobs/{queued}/cancel").status_code == 202
    assert client.delete(f"/v1/jobs/{queued}").status_code == 204
    assert client.get(f"/v1/jobs/{queued}").status_code == 404
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert not (ctx.store.root / "datasets" / dataset["id"]).exists()


def test_retention_removes_old_checkpoints_and_failed_artifacts(
    client: TestClient, ctx: WorkerContext
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from service.rows import Job, utcnow
    from worker.jobs.reconcile import apply_retention

    done = submit(client, make_spec(epochs=1))
    assert run_job(ctx, done) == "succeeded"
    cancelled = submit(client, make_spec(epochs=1))
    client.post(f"/v1/jobs/{cancelled}/cancel")
    for job_id in (done, cancelled):  # what a dead worker or a hand-back may leave
        ctx.store.put_bytes(f"jobs/{job_id}/checkpoint.json", b"{}")
    ctx.store.put_bytes(f"batch_predictions/{cancelled}/partial-1.parquet", b"x")
    assert apply_retention(ctx) == 0  # no retention set: keep everything
    ctx.settings = ctx.settings.model_copy(update={"retention_days": 7})
    assert apply_retention(ctx) == 0  # too recent
    with ctx.session_factory() as session:
        old = utcnow() - timedelta(days=8)
        session.execute(update(Job).values(finished_at=old))
        session.commit()
    assert apply_retention(ctx) == 2
    assert not ctx.store.exists(f"jobs/{done}/checkpoint.json")
    assert not ctx.store.exists(f"batch_predictions/{cancelled}/partial-1.parquet")
    model_id = client.get(f"/v1/jobs/{done}").json()["model_id"]
    assert client.get(f"/v1/models/{model_id}/artifact").status_code == 200  # models stay
    assert apply_retention(ctx) == 0  # each job once
