"""The training spec: plain data, validated by pydantic, never mutated after validation.

One class per layer, optimizer, schedule and data-set kind, joined in discriminated unions.
Adding a layer type: one class in layers.py (its fields, Keras class and shape rule), one
builder in worker/build/layers.py, one test. Older spec versions are upgraded by the steps in
versions.py before validation.
"""

from service.spec.training import TrainingSpec
from service.spec.versions import SPEC_VERSION

__all__ = ["SPEC_VERSION", "TrainingSpec"]
