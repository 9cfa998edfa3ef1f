"""The worker side: Celery app, model building, training and Keras-based prediction."""
