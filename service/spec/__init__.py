"""The training spec, v1: plain data, validated by pydantic, never mutated after validation.

One class per layer, optimizer, schedule and data-set kind, joined in discriminated unions.
Adding a layer type: one class in layers.py (added to `LayerSpec`), one builder in
worker/layers.py, one shape rule in plan.py, one test.
"""

from service.spec.training import SPEC_VERSION, TrainingSpec

__all__ = ["SPEC_VERSION", "TrainingSpec"]
