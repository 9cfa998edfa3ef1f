"""One registration per type: every spec type has its builder and shape rule, every builder a
spec type; the same for optimizers, schedules, losses, metrics and job kinds."""

from typing import Any

import keras
import pytest

from service.jobs.kinds import JOB_KINDS
from service.spec.layers import LAYER_TYPES, LayerBase
from service.spec.losses import LOSS_TASKS, METRIC_TASKS
from service.spec.optimizers import OPTIMIZER_TYPES
from service.spec.schedules import SCHEDULE_TYPES
from worker.build.layers import LAYER_BUILDERS
from worker.build.losses import LOSS_BUILDERS, METRIC_BUILDERS
from worker.build.optimizers import OPTIMIZER_BUILDERS, SCHEDULE_BUILDERS
from worker.jobs import kinds  # noqa: F401  (registers the runners)
from worker.jobs.lifecycle import RUNNERS

# the smallest valid instance of each layer type whose fields have no defaults
REQUIRED: dict[str, dict[str, Any]] = {
    "dense": {"units": 4},
    "dropout": {"rate": 0.1},
    "alpha_dropout": {"rate": 0.1},
    "gaussian_dropout": {"rate": 0.1},
    "gaussian_noise": {"stddev": 0.1},
    "activation": {"activation": "relu"},
}


@pytest.mark.parametrize(
    ("name", "spec_types", "builders"),
    [
        ("layers", LAYER_TYPES, LAYER_BUILDERS),
        ("optimizers", OPTIMIZER_TYPES, OPTIMIZER_BUILDERS),
        ("schedules", SCHEDULE_TYPES, SCHEDULE_BUILDERS),
        ("losses", LOSS_TASKS, LOSS_BUILDERS),
        ("metrics", METRIC_TASKS, METRIC_BUILDERS),
        ("job kinds", JOB_KINDS, RUNNERS),
    ],
)
def test_every_spec_type_has_a_builder_and_every_builder_a_spec_type(
    name: str, spec_types: dict[str, Any], builders: dict[str, Any]
) -> None:
    assert set(spec_types) - set(builders) == set(), f"{name} without a builder"
    assert set(builders) - set(spec_types) == set(), f"{name} builders without a spec type"


@pytest.mark.parametrize("type_name", sorted(LAYER_TYPES))
def test_layer_type_has_its_shape_rule_and_builds_its_keras_class(type_name: str) -> None:
    cls = LAYER_TYPES[type_name]
    assert cls.output_shape is not LayerBase.output_shape, f"{type_name}: no shape rule"
    assert cls.param_counts is not LayerBase.param_counts, f"{type_name}: no parameter rule"
    spec = cls.model_validate({"type": type_name, **REQUIRED.get(type_name, {})})
    spec = spec.resolve(_NoDefaults())
    layer = LAYER_BUILDERS[type_name](spec, "probe")
    assert type(layer).__name__ == cls.keras_class
    # the planner's rule counts what Keras counts, for a per-row shape of 6 features
    model = keras.Sequential([keras.Input((6,)), layer])
    trainable, non_trainable = spec.param_counts((6,))
    assert model.count_params() == trainable + non_trainable
    assert tuple(model.outputs[0].shape[1:]) == spec.output_shape((6,))


class _NoDefaults:
    activation = kernel_initializer = kernel_regularizer = kernel_constraint = None
