"""Property-based requests from the OpenAPI document: no request may cause a server error."""

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from service.app import create_app
from service.db import upgrade_database
from service.settings import Settings

pytestmark = pytest.mark.slow

_data = Path(tempfile.mkdtemp(prefix="kts-schemathesis-"))
_settings = Settings(data_dir=_data, require_auth=False)  # type: ignore[arg-type]
upgrade_database(_settings.resolved_database_url())
app = create_app(_settings)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
SENT = {"requests": 0}


def _no_server_error(case: schemathesis.Case) -> None:
    if case.path.endswith("/events"):
        case.path_parameters = {"job_id": "unknown"}  # a live stream never ends
    response = case.call()
    SENT["requests"] += 1
    assert response.status_code < 500, (case.method, case.path, response.text[:500])


def test_no_server_errors() -> None:
    """Every operation of the schema, 160 generated requests at most each. Driven through
    Hypothesis directly rather than `schema.parametrize()`, whose per-operation items collapse
    into one test that sends a handful of requests under pytest-xdist."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    for operation in operations:
        check = settings(max_examples=160, deadline=None, suppress_health_check=list(HealthCheck))(
            given(case=operation.as_strategy())(_no_server_error)
        )
        check()
    print(f"schemathesis sent {SENT['requests']} requests to {len(operations)} operations")
    assert SENT["requests"] >= 2000, SENT
