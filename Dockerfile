# syntax=docker/dockerfile:1
# Two images from one file: `--target api` (no torch, ~200 MB) and `--target worker` (CUDA torch + diffusers).

FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY contract ./contract
COPY app ./app
COPY worker ./worker
COPY deploy/models.json ./deploy/models.json
RUN useradd --create-home --uid 10001 svc && mkdir -p /data/images && chown svc /data/images

FROM base AS api
RUN pip install '.[api]'
USER svc
ENV DIFFUSION_STORAGE_DIR=/data/images \
    DIFFUSION_MODELS_FILE=/srv/deploy/models.json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# The CUDA build of torch comes from PyTorch's own index; everything else from PyPI.
ARG TORCH_VERSION=2.9.1
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" && pip install '.[worker]'
# The default model ships inside the worker package: the worker starts without any download.
USER svc
ENV DIFFUSION_STORAGE_DIR=/data/images \
    DIFFUSION_MODELS_FILE=/srv/deploy/models.json \
    HF_HOME=/models/hf
EXPOSE 9101
CMD ["python", "-m", "worker", "--metrics-port", "9101"]
