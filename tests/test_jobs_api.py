"""Job routes without a worker: idempotency, cancel, list, 404s, events for an ended job."""

from fastapi.testclient import TestClient

from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def test_idempotency_key_returns_the_first_job(client: TestClient) -> None:
    headers = {"Idempotency-Key": "abc-1"}
    first = client.post("/v1/jobs", json=make_spec(), headers=headers)
    again = client.post("/v1/jobs", json=make_spec(), headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1
    other = client.post("/v1/jobs", json=make_spec(epochs=4), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "conflict"
    client.post(f"/v1/jobs/{first.json()['id']}/cancel")
    replay = client.post("/v1/jobs", json=make_spec(), headers=headers)
    assert replay.status_code == 202 and replay.json()["status"] == "cancelled"


def test_cancel_queued_job_at_once_and_finished_is_409(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=make_spec()).json()
    assert job["status"] == "queued" and job["progress"] == {"epoch": 0, "epochs": 3}
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_list_filters_by_status_newest_first(client: TestClient) -> None:
    ids = [client.post("/v1/jobs", json=make_spec(name=f"j{i}")).json()["id"] for i in range(4)]
    client.post(f"/v1/jobs/{ids[1]}/cancel")
    listed = client.get("/v1/jobs").json()["items"]
    assert [j["id"] for j in listed] == ids[::-1]
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert [j["id"] for j in queued] == [ids[3], ids[2], ids[0]]
    assert client.get("/v1/jobs", params={"status": "sleeping"}).status_code == 422
    page = client.get("/v1/jobs", params={"limit": 3}).json()
    rest = client.get("/v1/jobs", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [j["id"] for j in page["items"] + rest["items"]] == ids[::-1]


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in (
        "/v1/jobs/nope",
        "/v1/models/nope",
        "/v1/datasets/nope",
        "/v1/models/nope/artifact",
        "/v1/jobs/nope/events",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"
    assert client.post("/v1/jobs/nope/cancel").status_code == 404
    assert client.post("/v1/models/nope/predict", json={"instances": [[1]]}).status_code == 404


def test_events_of_a_cancelled_job_end_with_done(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=make_spec()).json()
    client.post(f"/v1/jobs/{job['id']}/cancel")
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert "event: done" in text and "event: progress" not in text


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {
        "database": "ok",
        "broker": "ok",
        "artifacts": "ok",
    }


def test_readiness_is_503_when_the_broker_is_down(tmp_path: object) -> None:
    from service.app import create_app
    from service.db import upgrade_database
    from service.settings import Settings

    s = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0", require_auth=False)  # type: ignore[arg-type]
    upgrade_database(s.resolved_database_url())
    with TestClient(create_app(s)) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["broker"].startswith("unreachable")


def test_event_stream_has_ids_and_resumes_after_last_event_id(
    client: TestClient, ctx: WorkerContext
) -> None:
    job_id = submit(client, make_spec(epochs=3))
    assert run_job(ctx, job_id) == "succeeded"
    full = client.get(f"/v1/jobs/{job_id}/events").text
    ids = [line[4:] for line in full.splitlines() if line.startswith("id: ")]
    assert ids == ["1", "2", "3", "3"]  # three epochs, then done
    resumed = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "2"}).text
    events = [line[7:] for line in resumed.splitlines() if line.startswith("event: ")]
    assert events == ["progress", "done"] and '"epoch": 3' in resumed
