"""What accelerators this host has, found without importing a Keras backend (the `kts`
command decides how many worker processes to start before any of them imports one)."""

import importlib.util
import os
import re
import shutil
import subprocess

CUDA_PLUGINS = ("jax_cuda13_plugin", "jax_cuda12_plugin")


def visible_gpus() -> list[str]:
    """Indexes of the NVIDIA GPUs nvidia-smi lists (those the container was given)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def gpu_extra_installed() -> bool:
    return any(importlib.util.find_spec(name) is not None for name in CUDA_PLUGINS)


def host_devices() -> int:
    """Devices a CPU worker trains one job on: JAX's host devices, which are 1 unless
    XLA_FLAGS has --xla_force_host_platform_device_count=N (read without importing JAX)."""
    from inference.runtime import default_backend

    backend = os.environ.get("KTS_BACKEND") or os.environ.get("KERAS_BACKEND") or default_backend()
    if backend != "jax":
        return 1  # Keras's distribution API is JAX's only
    found = re.search(
        r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", "")
    )
    return max(1, int(found.group(1))) if found else 1
