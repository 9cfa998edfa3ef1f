"""Spec versions: stored and sent specs are upgraded by small registered steps before they are
validated, so a job stored (or a client written) under an older version keeps working.

A step takes the plain JSON of version N and returns version N + 1. A spec without
`spec_version` is read as version 1 (the first version had none); every step acts only on
the fields it renames, so a newer spec without a version passes through unchanged.
"""

from collections.abc import Callable
from typing import Any

from service.registry import register_in

SPEC_VERSION = 2

Step = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADES: dict[int, Step] = {}


def upgrade_from(version: int) -> Callable[[Step], Step]:
    """Register the step from `version` to `version + 1`."""
    return register_in(UPGRADES, version)


@upgrade_from(1)
def _uncertainty_object(spec: dict[str, Any]) -> dict[str, Any]:
    """v2 groups how uncertainty quality is measured: `uncertainty_samples: N` became
    `uncertainty: {"mc_samples": N}` (beside the calibration bins)."""
    if "uncertainty_samples" not in spec or "uncertainty" in spec:
        return spec
    out = {k: v for k, v in spec.items() if k != "uncertainty_samples"}
    out["uncertainty"] = {"mc_samples": spec["uncertainty_samples"]}
    return out


def upgrade(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec in the current version; a version this code does not know is left for the
    validator to refuse (at loc spec_version)."""
    version = spec.get("spec_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        return spec
    if not 1 <= version < SPEC_VERSION:
        return spec
    for step in range(version, SPEC_VERSION):
        spec = UPGRADES[step](spec)
    return {**spec, "spec_version": SPEC_VERSION}
