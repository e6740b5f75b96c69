#!/usr/bin/env bash
# Resolve the tags this project deploys to their current registry digests, to re-pin them:
#   deploy/pin-images.sh              # prints "tag@sha256:..." for each image
# Then paste the results into the Dockerfile (ARG PYTHON_BASE / ARG CUDA_BASE) and
# docker-compose.yml (redis, postgres), rebuild, and check the worker's build facts:
#   docker run --rm reprotrain-worker:local cat /etc/reprotrain/build.json
# The digest printed is the multi-platform index digest (what `docker pull tag@digest` resolves on
# any platform). Needs Docker with buildx and network access to the registries.
set -euo pipefail

IMAGES=(
    python:3.11-slim-bookworm
    nvidia/cuda:12.8.1-runtime-ubuntu24.04
    redis:7.4-alpine
    postgres:17-bookworm
)
[ "$#" -gt 0 ] && IMAGES=("$@")

for tag in "${IMAGES[@]}"; do
    digest=$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest}}' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])')
    echo "${tag}@${digest}"
done
