# One image for the API, the migration step and the workers.
# GPU hosts: build with --build-arg EXTRA=gpu-tf to get TensorFlow with CUDA.
FROM python:3.11-slim
ARG EXTRA=tf
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY worker ./worker
COPY alembic ./alembic
# editable, so that `kts migrate` finds alembic/ beside the code
RUN pip install --no-cache-dir -e ".[${EXTRA}]"
ENV KTS_DATA_DIR=/data
EXPOSE 8000
CMD ["kts", "serve", "--host", "0.0.0.0", "--port", "8000"]
