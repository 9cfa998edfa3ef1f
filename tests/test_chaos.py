"""Chaos: 200 jobs, two real workers on PostgreSQL and Redis, one worker SIGKILLed twice
mid-training and Redis restarted once: every job succeeds exactly once; killed ones resume."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from chaos import run_chaos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_no_job_lost_or_duplicated(pg_url: str, tmp_path: Path) -> None:
    result = run_chaos(pg_url, n_jobs=200, kills=2, timeout=900, root=tmp_path)
    assert result["statuses"] == {"succeeded": 200}, result
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["without_model"] == 0
    assert len(result["killed_jobs"]) == 2
    for job_id, epoch in result["resumed_from_epoch"].items():
        assert epoch is not None and epoch >= 1, (job_id, result)


def test_sigterm_hands_the_job_back_and_another_worker_resumes(pg_url: str, tmp_path: Path) -> None:
    import signal
    import time

    import httpx
    from chaos import Cluster
    from sqlalchemy import create_engine, select

    from service.rows import Job

    cluster = Cluster(tmp_path, pg_url)
    engine = create_engine(pg_url)
    try:
        base = cluster.up()
        cluster.worker("wa")
        spec = {
            "dataset": {"builtin": "digits"},
            "epochs": 60,
            "batch_size": 16,
            "seed": 1,
            "model": {
                "layers": [
                    {"type": "dense", "units": 32, "activation": "relu"},
                    {"type": "dense", "units": 10, "activation": "softmax"},
                ]
            },
        }
        job_id = httpx.post(f"{base}/v1/jobs", json=spec).json()["id"]

        def state() -> tuple[str, int]:
            with engine.connect() as conn:
                row = conn.execute(select(Job.status, Job.epoch).where(Job.id == job_id)).one()
            return str(row.status), int(row.epoch)

        deadline = time.monotonic() + 120
        while state()[1] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        cluster.kill("wa", signal.SIGTERM, group=False)  # as docker stop: checkpoint, hand back
        status, epoch = state()
        assert status == "queued" and 3 <= epoch < 60
        cluster.worker("wb")
        while state()[0] != "succeeded":
            assert time.monotonic() < deadline + 120
            time.sleep(0.2)
        job = httpx.get(f"{base}/v1/jobs/{job_id}").json()
        assert job["resumed_from_epoch"] is not None and job["resumed_from_epoch"] >= 3
        assert len(job["history"]["loss"]) == 60
    finally:
        cluster.down()
        engine.dispose()
