"""pyproject.toml lists every package, so that the wheel (and the Docker image) ships all code."""

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests"}


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _source_packages() -> set[str]:
    """Every folder holding an __init__.py under a top-level package of the checkout."""
    tops = [
        d
        for d in ROOT.iterdir()
        if d.is_dir() and (d / "__init__.py").is_file() and d.name not in NOT_SHIPPED
    ]
    found = set()
    for top in tops:
        for init in top.rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_every_package_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = sorted(_source_packages() - listed)
    assert not missing, (
        "Expected every folder with an __init__.py to be in [tool.setuptools] packages of "
        f"pyproject.toml. Received: missing={missing}"
    )
    assert {"service", "worker", "inference", "kts_client", "kts_client.cli"} <= listed


def test_every_listed_package_exists() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    for name in setuptools["packages"]:
        folder = ROOT / package_dir.get(name, name.replace(".", "/"))
        assert folder.is_dir(), f"Expected a folder for package {name}. Received: {folder}"


def test_migrations_ship_as_service_migrations() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["service.migrations"] == "alembic"
    assert setuptools["package-dir"]["service.migrations.versions"] == "alembic/versions"
    assert "script.py.mako" in setuptools["package-data"]["service.migrations"]
    assert (ROOT / "alembic" / "script.py.mako").is_file()
    # No __init__.py there: `alembic/` would then shadow the Alembic library in a checkout.
    assert not (ROOT / "alembic" / "__init__.py").exists()


def test_mypy_checks_every_top_level_package() -> None:
    config = _pyproject()
    tops = {name for name in config["tool"]["setuptools"]["packages"] if "." not in name}
    assert set(config["tool"]["mypy"]["packages"]) == tops


def test_no_source_file_is_git_ignored() -> None:
    """A pattern such as `build/` once hid worker/build/ from git, and so from every wheel."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    folders = ["alembic", *sorted({n.split(".")[0] for n in _source_packages()})]
    out = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--", *folders],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    ignored = [
        f for f in out.stdout.splitlines() if "__pycache__" not in f and not f.endswith(".pyc")
    ]
    assert not ignored, f"Expected no ignored source files. Received: ignored={ignored}"
