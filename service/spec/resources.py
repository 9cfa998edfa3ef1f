"""What a job needs from the worker that runs it: an accelerator kind and a device count.

Jobs are routed by it (service/queue.py: one queue per accelerator and device count), so a
job only ever reaches a worker that can run it.
"""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from service.spec.common import Strict

Accelerator = Literal["gpu", "cpu", "any"]
MAX_DEVICES = 64  # a bound on the queue names a worker subscribes to, not a hardware limit


class Resources(Strict):
    """A training job's needs: `devices` > 1 trains data parallel across that many devices."""

    accelerator: Accelerator = Field(
        "any",
        description="gpu or cpu: only workers of that kind take the job; any: the first free "
        "worker (GPU workers take these too unless started with --no-take-any).",
    )
    devices: int = Field(
        1,
        ge=1,
        le=MAX_DEVICES,
        description="Devices of one worker the job trains on, data parallel (JAX backend): "
        "each batch_size batch (the global batch; divisible by devices) is split across them.",
    )

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None) -> "Resources":
        """The resources of a stored spec (its "resources" dict), defaults filled in; specs
        from before resources existed ask for the defaults."""
        return cls.model_validate(stored or {})


class OneDeviceResources(Resources):
    """Batch predictions and optimize jobs run on one device: only the accelerator routes."""

    devices: int = Field(
        1, ge=1, le=1, description="Always 1: these jobs run on one device of their worker."
    )


DEFAULT_RESOURCES = Resources()
