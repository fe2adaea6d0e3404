# syntax=docker/dockerfile:1
# maskgrpo CUDA image: the GPU stages (sft, rollout, update, evaluate) with torch on CUDA and
# DeepSpeed (ZeRO under torchrun/accelerate inside one pod).
#   docker build -f images/cuda.Dockerfile -t maskgrpo-cuda .         (from the repository root)
#   docker build -f images/cuda.Dockerfile \
#     --build-arg BASE_IMAGE=mirror.example/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg BUILD_IMAGE=mirror.example/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 .
# Any stage runs as `python -m maskgrpo.stages.<sft|rollout|score|update|evaluate> --spec '<json>'`.
# No ENTRYPOINT (KFP sets the command); no credentials baked in (S3 keys come from a Secret).

ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG BUILD_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

# ---- build: CUDA toolkit present, so DeepSpeed can be installed (ops JIT-compile at run time) ----
FROM ${BUILD_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008 (pin apt versions): the distribution's current python3 is wanted; exact pins break on
# every security update of the base image or its mirror.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CUDA wheel index (pyproject pins torch==2.13.0; the package install
# below sees it satisfied and keeps the CUDA build).
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
# DS_BUILD_OPS=0: no ahead-of-time op builds; DeepSpeed JIT-compiles the few it needs.
# DL3059: kept apart from the torch layer on purpose, so changing DeepSpeed does not re-download
# several GB of CUDA torch wheels.
# hadolint ignore=DL3059
RUN DS_BUILD_OPS=0 pip install "deepspeed==${DEEPSPEED_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# DL3013 (pin pip versions) reads '.[extras]' as a package name: this installs the local project,
# whose dependencies are pinned or bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install '.[s3,local,cluster]' \
    && python -c "import maskgrpo, torch, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'deepspeed', deepspeed.__version__)"

# ---- runtime: CUDA runtime + the virtualenv, non-root ------------------------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="maskgrpo-cuda" \
      org.opencontainers.image.description="MaskGRPO for masked diffusion models: GPU stages (torch CUDA, DeepSpeed)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The same python3 as the build stage (the venv links to it). DL3008: see the build stage.
# The non-root user (UID/GID 10001, as the chart's runAsUser) and, owned by it, /gcs, /minio, /s3:
# where the KFP v2 launcher stages artifacts (older KFP backends mount no emptyDirs there).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 maskgrpo \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/maskgrpo \
       --shell /usr/sbin/nologin maskgrpo \
    && install -d -o 10001 -g 10001 /gcs /minio /s3
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/maskgrpo \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/hf \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFECT_HOME=/tmp/prefect \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions \
    TRITON_CACHE_DIR=/tmp/triton
WORKDIR /home/maskgrpo
USER 10001:10001
# A batch image: Jobs and KFP steps end on their own; Kubernetes probes, not Docker's, apply.
HEALTHCHECK NONE
CMD ["maskgrpo", "--help"]
