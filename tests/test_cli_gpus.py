"""`kts worker --gpus` never trains on CPU silently: on a host without GPUs, or without the
gpu extra, it exits at start naming what is missing."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.devices import gpu_extra_installed

KTS = str(Path(sys.executable).parent / "kts")


def _kts_worker(gpus: str, path: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "KTS_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [KTS, "worker", "--gpus", gpus], env=env, capture_output=True, text=True, timeout=60
    )


def test_no_gpu_on_this_host_exits_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = _kts_worker("all", str(empty), tmp_path)
    assert done.returncode == 2
    assert "no NVIDIA GPU" in done.stderr


@pytest.mark.skipif(gpu_extra_installed(), reason="this host has JAX's CUDA plugin")
def test_gpus_without_the_gpu_extra_exit_naming_it(tmp_path: Path) -> None:
    # a host whose driver lists two GPUs (nvidia-smi's own output format)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\n"
        "echo 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n"
    )
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    done = _kts_worker("0,1", f"{bin_dir}:{os.environ['PATH']}", tmp_path)
    assert done.returncode == 2
    assert "keras-training-service[gpu]" in done.stderr
    unknown = _kts_worker("7", f"{bin_dir}:{os.environ['PATH']}", tmp_path)
    assert unknown.returncode == 2


@pytest.mark.skipif(gpu_extra_installed(), reason="this host has JAX's CUDA plugin")
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_gpu_worker_whose_backend_sees_no_gpu_stops_before_any_job(
    tmp_path: Path, pool: str
) -> None:
    # nvidia-smi lists a GPU, JAX (no CUDA plugin) sees only the CPU: one unpinned worker
    # starts, then stops rather than take GPU jobs on the CPU
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KTS_")},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KTS_DATA_DIR": str(tmp_path / "data"),
        "KTS_BACKEND": "jax",
        "KTS_REQUIRE_AUTH": "false",
    }
    done = subprocess.run(
        [KTS, "worker", "--accelerator", "gpu", "--pool", pool],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode != 0, done.stderr[-2000:]
    assert "sees no GPU" in done.stdout + done.stderr
