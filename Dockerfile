# Two images from one file (docker-compose.yml builds both):
#   worker  the worker, simulator and topic admin: the package WITHOUT the train extra, so no
#           TensorFlow. `docker build --target worker -t intentflow/worker:local .`
#   train   the same plus the `train` extra (TensorFlow, tf2onnx), for training a bundle.
#           `docker build --target train -t intentflow/train:local .`
# Both run as the non-root user `intentflow` (uid 10001) in /app, the repository layout the
# defaults expect: models/current, var/worker, data/.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 intentflow \
 && useradd --system --uid 10001 --gid intentflow --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin intentflow
WORKDIR /app

# Dependencies get their own layers (installed through empty stub packages), so a source change
# does not download onnxruntime or TensorFlow again.
FROM base AS deps-worker
COPY pyproject.toml README.md ./
RUN python -m venv /opt/venv \
 && mkdir -p streams model_export \
 && touch streams/__init__.py model_export/__init__.py \
 && pip install . \
 && pip uninstall -y intentflow \
 && rm -rf streams model_export build ./*.egg-info

FROM deps-worker AS deps-train
RUN mkdir -p streams model_export \
 && touch streams/__init__.py model_export/__init__.py \
 && pip install ".[train]" \
 && pip uninstall -y intentflow \
 && rm -rf streams model_export build ./*.egg-info

FROM deps-worker AS build-worker
COPY streams ./streams
COPY model_export ./model_export
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM deps-train AS build-train
COPY streams ./streams
COPY model_export ./model_export
RUN pip install --no-deps . && rm -rf build ./*.egg-info

FROM base AS train
COPY --from=build-train /opt/venv /opt/venv
RUN install -d -o intentflow -g intentflow /app/models /app/data /app/var
USER intentflow
CMD ["intentflow", "train", "--help"]

# Last, so that a plain `docker build .` gives the worker image.
FROM base AS worker
COPY --from=build-worker /opt/venv /opt/venv
RUN install -d -o intentflow -g intentflow /app/models /app/data /app/var
USER intentflow
ENV INTENTFLOW_WEB_HOST=0.0.0.0 \
    INTENTFLOW_WEB_PORT=6066 \
    INTENTFLOW_DATA_DIR=/app/var/worker \
    INTENTFLOW_MODEL_PATH=/app/models/current
EXPOSE 6066
CMD ["intentflow", "worker"]
