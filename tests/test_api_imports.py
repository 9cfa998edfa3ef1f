"""The API process serves job and data-set routes without importing TensorFlow or Keras."""

import subprocess
import sys
import textwrap
from pathlib import Path


def test_api_routes_do_not_import_tensorflow(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.db import upgrade_database
        from service.settings import Settings
        s = Settings(data_dir={str(tmp_path)!r}, require_auth=False)
        upgrade_database(s.resolved_database_url())
        with TestClient(create_app(s)) as c:
            spec = {{"dataset": {{"builtin": "iris"}}, "model": {{"layers": [
                {{"type": "dense", "units": 3, "activation": "softmax"}}]}}}}
            assert c.post("/v1/jobs/validate", json=spec).status_code == 200
            job = c.post("/v1/jobs", json=spec).json()
            assert c.get("/v1/jobs/" + job["id"]).status_code == 200
            assert c.get("/v1/datasets").status_code == 200
            assert c.get("/readyz").status_code == 200
        heavy = [m for m in ("tensorflow", "keras", "jax", "torch") if m in sys.modules]
        print("HEAVY", heavy)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
