# syntax=docker/dockerfile:1
#
# Two images from one file (see docs/self-hosting.md):
#   docker build --target api    -t reprotrain-api .      # REST API + migrations; no torch
#   docker build --target worker -t reprotrain-worker .   # Celery worker: CUDA runtime + torch
#
# Every base image is pinned by digest. The digests below were copied from public repositories
# that pin these tags; they were not pulled from the registry here. Re-pin (and check) them with
#   deploy/pin-images.sh            # prints the current digest of each tag
# and pass --build-arg PYTHON_BASE=... / CUDA_BASE=... or edit the defaults below.
# PYTHON_BASE must stay Debian bookworm (glibc 2.36): the worker copies its interpreter onto the
# Ubuntu 24.04 (glibc 2.39) CUDA image, so API and worker run the very same CPython build.
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:ebef3c171eeef0298e4eb2e4be843105edf3b8b0ac45e0b43acee358e8046867

# ---------------------------------------------------------------------------------------------
# python: the interpreter both images run
FROM ${PYTHON_BASE} AS python

# ---------------------------------------------------------------------------------------------
# wheel: build the reprotrain wheel (pure Python) with a hash-pinned setuptools
FROM ${PYTHON_BASE} AS wheel
WORKDIR /src
COPY deploy/requirements-build.lock deploy/
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r deploy/requirements-build.lock
COPY pyproject.toml README.md ./
COPY reprotrain/ reprotrain/
COPY service/ service/
COPY worker/ worker/
COPY examples/ examples/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------------
# api: the REST API (and the one-shot `reprotrain db upgrade`); never imports torch
FROM ${PYTHON_BASE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONHASHSEED=0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REPROTRAIN_DATA_DIR=/var/lib/reprotrain \
    REPROTRAIN_ARTIFACTS_DIR=/var/lib/reprotrain/artifacts \
    REPROTRAIN_HOST=0.0.0.0 \
    REPROTRAIN_PORT=8000
RUN groupadd --system --gid 10001 reprotrain \
    && useradd --system --uid 10001 --gid reprotrain --home-dir /var/lib/reprotrain \
       --shell /usr/sbin/nologin reprotrain \
    && install -d -o reprotrain -g reprotrain /var/lib/reprotrain /var/lib/reprotrain/artifacts
WORKDIR /opt/reprotrain
COPY requirements-image.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements-image.lock
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/reprotrain-*.whl && rm -rf /tmp/wheels
COPY --chmod=755 deploy/healthcheck.py /usr/local/bin/reprotrain-healthcheck
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/usr/local/bin/reprotrain-healthcheck", "api"]
CMD ["reprotrain", "api"]

# ---------------------------------------------------------------------------------------------
# worker: one Celery worker (solo pool: one job at a time, one container per GPU)
FROM ${CUDA_BASE} AS worker
ARG CUDA_BASE
ARG PYTHON_BASE
# torch: the version of requirements.lock, from PyTorch's CUDA wheel index (its wheels carry their
# own CUDA/cuDNN/NCCL libraries; the CUDA base must not be older than the index's CUDA version).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG VCS_REF=
# BuildKit also honours SOURCE_DATE_EPOCH itself (reproducible timestamps); here it dates the build facts.
ARG SOURCE_DATE_EPOCH=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONHASHSEED=0 \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REPROTRAIN_DATA_DIR=/var/lib/reprotrain \
    REPROTRAIN_ARTIFACTS_DIR=/var/lib/reprotrain/artifacts \
    REPROTRAIN_JOBS_DIR=/var/lib/reprotrain/jobs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The shared libraries the bookworm CPython build links against (Ubuntu 24.04 names). Versions come
# from the Ubuntu archive at build time: the build facts record a digest of the dpkg list, so a
# rebuild with different packages is visible in every job's fingerprint.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       ca-certificates libbz2-1.0 libexpat1 libffi8 liblzma5 libncursesw6 libreadline8t64 \
       libsqlite3-0 libssl3t64 libuuid1 netbase tzdata zlib1g \
    && rm -rf /var/lib/apt/lists/*
COPY --from=python /usr/local/bin/ /usr/local/bin/
COPY --from=python /usr/local/lib/ /usr/local/lib/
COPY --from=python /usr/local/include/ /usr/local/include/
RUN ldconfig && python3 --version
RUN groupadd --system --gid 10001 reprotrain \
    && useradd --system --uid 10001 --gid reprotrain --home-dir /var/lib/reprotrain \
       --shell /usr/sbin/nologin reprotrain \
    && install -d -o reprotrain -g reprotrain /var/lib/reprotrain /var/lib/reprotrain/artifacts \
       /var/lib/reprotrain/jobs
WORKDIR /opt/reprotrain
COPY requirements.lock requirements-image.lock requirements-worker.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements-image.lock \
    && pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements-worker.lock
# torch's pure-Python dependencies are installed (hashed) above, so this fetches only torch, triton
# and the nvidia-* libraries whose exact versions torch's own metadata pins.
RUN pip install --no-cache-dir --only-binary=:all: --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; v = torch.__version__; print(v); sys.exit(v.split('+')[0] != '${TORCH_VERSION}')"
COPY --from=wheel /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/reprotrain-*.whl && rm -rf /tmp/wheels
COPY --chmod=755 deploy/healthcheck.py /usr/local/bin/reprotrain-healthcheck
COPY deploy/build_facts.py /tmp/build_facts.py
RUN python /tmp/build_facts.py --target worker --base-image "${CUDA_BASE}" --python-image "${PYTHON_BASE}" \
       --lock requirements.lock --lock requirements-image.lock --lock requirements-worker.lock \
       --torch-index "${TORCH_INDEX_URL}" --vcs-ref "${VCS_REF}" -o /etc/reprotrain/build.json \
    && rm /tmp/build_facts.py
LABEL org.opencontainers.image.title="reprotrain-worker" \
      org.opencontainers.image.base.name="${CUDA_BASE}" \
      org.opencontainers.image.revision="${VCS_REF}"
USER 10001:10001
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/reprotrain-healthcheck", "worker"]
CMD ["reprotrain", "worker"]
