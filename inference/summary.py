"""The model summary as Keras counts it."""

import math
from typing import Any

import keras


def _count(weights: list[Any]) -> int:
    return sum(math.prod(w.shape) for w in weights)


def model_summary(model: keras.Model) -> dict[str, Any]:
    layers = []
    for layer in model.layers:
        shape = layer.output.shape
        was = layer.trainable
        layer.trainable = True  # state such as batch-norm statistics never trains
        own = _count(layer.non_trainable_weights)
        layer.trainable = was
        layers.append(
            {
                "name": layer.name,
                "class_name": layer.__class__.__name__,
                "output_shape": [None if d is None else int(d) for d in shape],
                "params": int(layer.count_params()) if layer.built else 0,
                "trainable": bool(layer.trainable),
                "trainable_params": _count(layer.trainable_weights),
                "non_trainable_params": _count(layer.non_trainable_weights),
                "own_non_trainable_params": own,
            }
        )
    trainable = _count(model.trainable_weights)
    non_trainable = _count(model.non_trainable_weights)
    return {
        "total_params": trainable + non_trainable,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "layers": layers,
    }


MC_SAMPLED = (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout)


def has_dropout(model: keras.Model) -> bool:
    """Whether Monte-Carlo Dropout has something to sample (dropout of any kind)."""
    return any(isinstance(layer, MC_SAMPLED) for layer in model.layers)
