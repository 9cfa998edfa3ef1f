"""The worker side: Celery app, model building, training and Keras-based prediction.

The process's Keras backend is fixed before any worker module imports Keras (see
inference/runtime.py).
"""

from inference.runtime import choose_backend

choose_backend()
