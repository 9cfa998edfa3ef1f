"""What the API process and the workers both need: loading a stored model, the
Monte-Carlo-Dropout sampler and its statistics, exports, and the service's own Keras objects.

Importing this package imports no Keras backend; its modules do, on first use.
"""
