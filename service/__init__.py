"""The API side of the Keras Training Service: spec, storage and HTTP routes (no TensorFlow)."""
