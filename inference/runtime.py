"""Per-process Keras set-up: import once, GPU memory growth on, quiet logs."""

import os
from functools import lru_cache

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: grow, do not grab


@lru_cache(maxsize=1)
def init_keras() -> str:
    """Import Keras in this process (once) and let TensorFlow grow GPU memory on demand."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised in this process
                pass
    return backend
