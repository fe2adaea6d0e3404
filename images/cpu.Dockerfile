# syntax=docker/dockerfile:1
# maskgrpo CPU image: the submitter/scheduler, score and evaluate on CPU, tiny end-to-end runs.
#   docker build -f images/cpu.Dockerfile -t maskgrpo-cpu .          (from the repository root)
#   docker build -f images/cpu.Dockerfile --build-arg BASE_IMAGE=mirror.example/python:3.11-slim-bookworm .
# Any stage runs as `python -m maskgrpo.stages.<sft|rollout|score|update|evaluate> --spec '<json>'`;
# the chart runs `maskgrpo submit|schedule ...`. No ENTRYPOINT, so KFP's command is used as is.
# No credentials are baked in: S3 keys arrive as environment variables from a Kubernetes Secret.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the package and its runtime extras --------------------------------
FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU wheel index: pyproject pins torch==2.13.0, and the default index would
# resolve that pin to a multi-GB CUDA build. The later install sees the pin satisfied.
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# DL3013 (pin pip versions) reads '.[extras]' as a package name: this installs the local project,
# whose dependencies are pinned or bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install '.[s3,local,cluster]' \
    && python -c "import maskgrpo, torch; print('maskgrpo', maskgrpo.__version__ if hasattr(maskgrpo, '__version__') else '?', 'torch', torch.__version__)"

# ---- runtime: the interpreter, the virtualenv, a non-root user --------------------------------
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="maskgrpo-cpu" \
      org.opencontainers.image.description="MaskGRPO for masked diffusion models: CPU stages and the KFP submitter" \
      org.opencontainers.image.licenses="Apache-2.0"
# The non-root user (UID/GID 10001, as the chart's runAsUser) and, owned by it, /gcs, /minio, /s3:
# where the KFP v2 launcher stages artifacts (older KFP backends mount no emptyDirs there).
RUN groupadd --system --gid 10001 maskgrpo \
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
    PREFECT_HOME=/tmp/prefect
WORKDIR /home/maskgrpo
USER 10001:10001
# A batch image: Jobs and KFP steps end on their own; Kubernetes probes, not Docker's, apply.
HEALTHCHECK NONE
CMD ["maskgrpo", "--help"]
