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
