"""docker-compose.yml cannot run here (no Docker engine): check what it runs exists."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_and_commands_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "api", "worker-gpu", "worker-cpu"} <= set(services)
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    kts = shutil.which("kts")
    assert kts, "the kts console script is installed"
    for name, service in services.items():
        command = service.get("command")
        if not command or command[0] != "kts":
            continue
        env = service["environment"]
        assert env["KTS_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["KTS_BROKER_URL"].startswith("redis://")
        # the subcommand and its flags parse (help exits before doing anything)
        out = subprocess.run([kts, *command[1:2], "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (name, out.stderr)
        flags = [c for c in command[2:] if c.startswith("--")]
        for flag in flags:
            assert flag in out.stdout, (name, flag)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_flower_watches_the_workers_task_events() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower")
    broker = services["worker-cpu"]["environment"]["KTS_BROKER_URL"]
    assert f"--broker={broker}" in flower["command"] and "flower" in flower["command"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])  # it can stop workers
    for name in ("worker-cpu", "worker-gpu"):
        assert "--events" in services[name]["command"], name
    assert services["api"]["environment"]["KTS_TASK_EVENTS"] == "true"  # task-sent events


def test_artifacts_live_in_minio(monkeypatch: Any) -> None:
    """API and workers reach the bucket that the one-shot creates; no artifact volume is shared."""
    from service.settings import Settings
    from service.storage.s3 import parse_url

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    minio, init = services["minio"], services["minio-init"]
    assert minio["image"].startswith("minio/minio") and minio["healthcheck"]["test"][0] == "CMD"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in minio.get("ports", []))
    for name in ("api", "worker-cpu", "worker-gpu"):
        service = services[name]
        assert service["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
        assert not service.get("volumes"), name  # nothing shared but the bucket
        for key in [k for k in list(os.environ) if k.startswith("KTS_")]:
            monkeypatch.delenv(key)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.artifact_dir is None and settings.artifact_url is not None
        bucket, _ = parse_url(settings.artifact_url)
        assert f"kts/{bucket}" in init["entrypoint"][-1]  # `mc mb` makes that bucket
        assert settings.s3_endpoint_url == "http://minio:9000"
        secret = settings.s3_secret_access_key
        assert secret and secret.get_secret_value() == minio["environment"]["MINIO_ROOT_PASSWORD"]
        assert settings.s3_access_key_id == minio["environment"]["MINIO_ROOT_USER"]
