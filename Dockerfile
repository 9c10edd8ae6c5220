# syntax=docker/dockerfile:1
# Two images from one file: `--target api` (no torch) and `--target worker` (CUDA torch + diffusers).
#
# Each image installs its extra's dependencies (pyproject.toml), pinned by constraints.txt, before any
# code is copied: a code edit rebuilds only the project's wheel and its one install layer, never torch.
# The worker gets torch's CUDA build from PyPI at the version the CPU tests ran (constraints.txt);
# `--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu` gives the same version's CPU build.

FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# One numeric non-root user for both images (Kubernetes' runAsNonRoot can check a number). The image
# directory and the caches exist owned by it; named volumes mounted there take that ownership.
RUN groupadd --system --gid 10001 svc \
    && useradd --system --uid 10001 --gid 10001 --home-dir /srv --no-create-home --shell /usr/sbin/nologin svc \
    && install -d -o 10001 -g 10001 /data/images /cache /cache/hf /cache/inductor
WORKDIR /srv
COPY pyproject.toml constraints.txt ./
COPY scripts/extra_requirements.py scripts/

# The project itself, as a wheel; the images mount it from here to install it, so no copy of the
# source stays in them.
FROM base AS wheel
COPY README.md ./
COPY contract contract/
COPY app app/
COPY worker worker/
COPY diffusion_client diffusion_client/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM base AS api
RUN --mount=type=cache,target=/root/.cache/pip \
    python scripts/extra_requirements.py api > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt --constraint constraints.txt \
    && rm /tmp/requirements.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps /dist/*.whl
COPY deploy/models.json deploy/healthcheck.py deploy/
USER 10001:10001
ENV DIFFUSION_HOST=0.0.0.0 \
    DIFFUSION_PORT=8000 \
    DIFFUSION_STORAGE_URL=/data/images \
    DIFFUSION_MODELS_FILE=/srv/deploy/models.json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/srv/deploy/healthcheck.py", "api"]
CMD ["python", "-m", "app"]

FROM base AS worker
# Empty: PyPI (torch's CUDA build). A PyTorch index URL here selects that index's build of the same version.
ARG TORCH_INDEX=""
RUN --mount=type=cache,target=/root/.cache/pip \
    python scripts/extra_requirements.py worker > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt --constraint constraints.txt \
        ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
    && rm /tmp/requirements.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps /dist/*.whl
COPY deploy/models.json deploy/healthcheck.py deploy/
USER 10001:10001
# The default model ships inside the worker package: the worker starts without any download. Hub
# models load from HF_HOME (mount a volume there); compiled graphs persist in the compile caches.
ENV DIFFUSION_STORAGE_URL=/data/images \
    DIFFUSION_MODELS_FILE=/srv/deploy/models.json \
    DIFFUSION_METRICS_PORT=9101 \
    HF_HOME=/cache/hf \
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor \
    TRITON_CACHE_DIR=/cache/inductor/triton \
    XDG_CACHE_HOME=/cache
EXPOSE 9101
# Healthy = warm: deploy/healthcheck.py waits for the diffusion_model_info sample a worker exports
# once its pipeline is loaded and warmed up. Compiling warm-up sizes on a GPU can take minutes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "/srv/deploy/healthcheck.py", "worker"]
# SIGTERM (docker stop, Kubernetes) lets the running job finish, then exits; give it the job timeout.
CMD ["python", "-m", "worker"]
