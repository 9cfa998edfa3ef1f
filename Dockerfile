# One image for the API, the migration step and the workers, installed from the project's wheel.
# Extras (pyproject.toml): jax (JAX on CPU), gpu (JAX with NVIDIA's CUDA 13 wheels), tf
# (TensorFlow, for the SavedModel and TFLite exports). GPU hosts: --build-arg EXTRA=gpu,tf.

# Build stage: only the sources the wheel is made of; the migrations in alembic/ become the
# package service.migrations (see [tool.setuptools] in pyproject.toml).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY alembic ./alembic
COPY inference ./inference
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps . -w /wheels

# Runtime stage: the wheel installed with its extras; no source tree, no editable install.
# The wheel is bind-mounted from the build stage (BuildKit, Docker's default builder), so it
# takes no layer of its own.
FROM python:3.12-slim
ARG EXTRA=jax,tf
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir "$(ls /wheels/keras_training_service-*.whl)[${EXTRA}]"
ENV KTS_DATA_DIR=/data
WORKDIR /data
EXPOSE 8000
CMD ["kts", "serve", "--host", "0.0.0.0", "--port", "8000"]
