"""One job across several devices of its worker (`resources.devices` > 1): Keras's
distribution API, data parallel, under the JAX backend.

Inside `distributed(...)` every variable is created replicated on the devices and `fit`
splits each batch (the spec's batch_size, the global batch) evenly across them; the
gradients are averaged by XLA, so training computes what one device would, up to the order
of float sums (tests/test_devices.py: losses per epoch within 1e-5 relative).
JAX refuses a batch that does not split evenly, so the spec's batch_size is a multiple of
the devices (a spec rule, service/spec/plan.py) and `even_rows` drops at most devices - 1
training and validation rows, so that the last partial batch splits too.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

from service.spec.resources import Resources
from worker.jobs.lifecycle import JobFailed


def devices_asked(spec: Mapping[str, Any]) -> int:
    """The devices a stored training spec asks for (1 for specs from before resources)."""
    return Resources.of(spec.get("resources")).devices


def distribution_for(devices: int) -> Any:
    """A DataParallel distribution over this worker's first `devices` devices (None for one),
    or JobFailed naming what this worker lacks."""
    if devices == 1:
        return None
    backend = keras.backend.backend()
    if backend != "jax":
        raise JobFailed(
            "devices_unavailable",
            f"resources.devices={devices} trains with Keras's distribution API, which needs "
            f"the JAX backend; the worker that took the job runs {backend}.",
        )
    found = keras.distribution.list_devices()
    if len(found) < devices:
        raise JobFailed(
            "devices_unavailable",
            f"Expected a worker with at least {devices} devices. Received: the worker that "
            f"took the job has {len(found)} ({', '.join(found)}).",
        )
    return keras.distribution.DataParallel(devices=found[:devices])


@contextmanager
def distributed(devices: int) -> Iterator[None]:
    """Build, resume, train and save the model inside this (nothing for one device)."""
    distribution = distribution_for(devices)
    if distribution is None:
        yield
        return
    with distribution.scope():
        yield


def even_rows(rows: np.ndarray, devices: int) -> np.ndarray:
    """The row indices less the last few, so that their count splits across the devices."""
    return rows[: len(rows) // devices * devices] if devices > 1 else rows
