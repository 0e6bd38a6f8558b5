# syntax=docker/dockerfile:1
# The openaim platform image (docker-compose.yml builds it for `platform` and `inference`).
#
#   docker build -t openaim:local .                       # CPU build of torch (the platform)
#   docker build -t openaim-gpu:local \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 .   # GPU worker
#
# torch is pinned in pyproject.toml (torch==2.13.0). An unpinned or plain-PyPI torch on Linux pulls
# several GB of CUDA packages, so torch is installed first from the PyTorch index named by
# TORCH_INDEX_URL: the CPU build for the platform; the GPU worker image installs the CUDA build of
# torch 2.13.0 from the CUDA index of the PyTorch index (the wheel carries its CUDA runtime; the host
# needs only the NVIDIA driver and container toolkit). `pip install .` then finds torch satisfied.
#
# Tip: a .dockerignore (.env, .venv, var/, frontend/node_modules, .git) keeps the build context small
# and keeps secrets out of it; this file only ever COPYs named paths.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# --- npm-installed browser assets (frontend/package.json) -------------------------------------------
FROM ${NODE_IMAGE} AS frontend-assets
WORKDIR /build/frontend
COPY frontend/ ./
RUN rm -rf node_modules \
    && if [ -f package-lock.json ]; then npm ci --omit=dev --ignore-scripts --no-audit --no-fund; \
       elif [ -f package.json ]; then npm install --omit=dev --ignore-scripts --no-audit --no-fund; \
       fi

# --- the platform ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS platform

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 openaim \
    && useradd --system --uid 10001 --gid openaim --home-dir /app --shell /usr/sbin/nologin openaim

# torch first (the largest layer, and the only one that differs between CPU and GPU images).
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# The project, installed as a package; the sources are not kept in the image.
COPY pyproject.toml README*.md /tmp/src/
COPY openaim/ /tmp/src/openaim/
COPY viewer/ /tmp/src/viewer/
COPY inference/ /tmp/src/inference/
COPY orthanc/ /tmp/src/orthanc/
RUN pip install /tmp/src && rm -rf /tmp/src

# Templates, static files and npm assets. Settings.frontend_dir defaults to a path beside the sources,
# which an installed package does not have: point it here.
COPY --from=frontend-assets /build/frontend/ /app/frontend/

# The data directory; a named volume mounted here inherits this ownership on first use.
RUN mkdir -p /var/lib/openaim && chown openaim:openaim /var/lib/openaim

ENV OPENAIM_DATA_DIR=/var/lib/openaim \
    OPENAIM_FRONTEND_DIR=/app/frontend \
    XDG_CACHE_HOME=/tmp/openaim-cache

WORKDIR /app
USER openaim:openaim
EXPOSE 8000
CMD ["openaim", "serve", "--host", "0.0.0.0", "--port", "8000"]
