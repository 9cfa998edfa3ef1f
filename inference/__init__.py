"""What the API process and the workers both need: loading a stored model, the
Monte-Carlo-Dropout sampler and its statistics, exports, and the service's own Keras objects.

Importing this package imports no Keras backend; its modules do, on first use. It fixes the
process's Keras backend first (KTS_BACKEND, else KERAS_BACKEND, else JAX where installed):
Keras alone would take ~/.keras/keras.json's, TensorFlow by default.
"""

from inference.runtime import choose_backend

choose_backend()
