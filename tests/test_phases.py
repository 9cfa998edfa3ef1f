"""A schedule's step counts over the whole job, across phases (each phase recompiles with a
new optimizer, which continues the job's step count)."""

import math

from fastapi.testclient import TestClient

from tests.conftest import make_spec, submit
from worker.context import WorkerContext
from worker.jobs.lifecycle import run_job


def test_schedule_continues_across_phases(client: TestClient, ctx: WorkerContext) -> None:
    spec = make_spec(
        phases=[{"epochs": 2}, {"epochs": 2}],
        optimizer={"type": "sgd", "learning_rate": 0.05},
        lr_schedule={"type": "exponential", "decay_steps": 10, "decay_rate": 0.5},
        validation_split=0.1,
        batch_size=64,
    )
    spec.pop("epochs")
    job_id = submit(client, spec)
    assert run_job(ctx, job_id) == "succeeded"
    rates = client.get(f"/v1/jobs/{job_id}").json()["history"]["learning_rate"]
    steps = math.ceil(int(1797 * 0.9) / 64)  # digits rows in training, batch 64
    expected = [0.05 * 0.5 ** (steps * epoch / 10) for epoch in (1, 2, 3, 4)]
    assert len(rates) == 4
    for got, want in zip(rates, expected, strict=True):
        assert math.isclose(got, want, rel_tol=1e-4), (rates, expected)
