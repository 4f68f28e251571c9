# ctp_nipype BIDS App: CT perfusion maps (SVD family and a Transformer) for a BIDS dataset of CTP scans.
#
#   docker build -t ctpnipype/ctp_nipype:0.1.0 .
#   docker run --rm -v /data/bids:/data:ro -v /data/derivatives/ctp_nipype:/out \
#       ctpnipype/ctp_nipype:0.1.0 /data /out participant --participant-label 01
#
# GPU inference: build with a CUDA-enabled torch (the variants offered for a torch release are listed
# at https://download.pytorch.org/whl/torch/), then run with `--gpus all` (Docker) or `--nv` (Apptainer):
#
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t ctpnipype/ctp_nipype:0.1.0-cuda .
#
# Everything the app needs at run time, the network's weights included, is inside the image: it makes no
# network access when it runs. See docs/containers.md and docs/cluster.md.
#
# tests/test_container.py lints this file with hadolint and repeats its two `pip install` commands (the
# wheel built here, the same pins) in a fresh virtual environment: keep those commands in this form.

# ---- stage 1: build the wheel of the package from the repository (the context is filtered by .dockerignore)
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY . /src
# the build backend pinned (pyproject.toml asks for setuptools>=64), no build isolation
RUN python -m pip install --no-cache-dir "setuptools==84.2.1" \
    && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheels /src

# ---- stage 2: the runtime image
FROM python:3.11.14-slim-bookworm

# torch: pinned as in the Makefile. The CPU index gives a small CPU-only build; a CUDA index
# (https://download.pytorch.org/whl/cu128, ...) gives GPU inference with `--device cuda`.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# the package's version (ctp_nipype/__init__.py); tests/test_container.py checks they agree
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="ctp_nipype" \
      org.opencontainers.image.description="CT perfusion maps (CBF, CBV, MTT, Tmax, BAD) with the SVD family and a Transformer, as a BIDS App" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.url="https://github.com/ctp-nipype/ctp_nipype" \
      org.opencontainers.image.source="https://github.com/ctp-nipype/ctp_nipype" \
      org.opencontainers.image.documentation="https://github.com/ctp-nipype/ctp_nipype/blob/main/docs/containers.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="ctp_nipype developers" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# NIPYPE_NO_ET: no version check over the network at run time.
# MPLCONFIGDIR under /tmp: writable under Docker and under Apptainer, whose image is read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    NIPYPE_NO_ET=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

RUN python -m pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# the package (its data files and the Transformer's weights travel inside the wheel) and its direct
# dependencies, pinned to the versions the test suite runs with
COPY --from=build /tmp/wheels /tmp/wheels
RUN python -m pip install --no-cache-dir /tmp/wheels/ctp_nipype-*.whl \
        "numpy==2.4.6" \
        "scipy==1.17.1" \
        "nibabel==5.4.2" \
        "nipype==1.11.0" \
        "pybids==0.22.0" \
        "SimpleITK==2.5.7" \
        "matplotlib==3.11.2" \
        "safetensors==0.8.0" \
        "tqdm==4.70.1" \
        "nilearn==0.14.1" \
        "pydicom==3.0.2" \
        "highdicom==0.28.2" \
        "pylibjpeg==2.1.0" \
        "pylibjpeg-libjpeg==2.5.0" \
        "pylibjpeg-openjpeg==2.6.0" \
        "pingouin==0.7.0" \
        "statsmodels==0.15.0" \
        "platformdirs==4.14.9" \
        "threadpoolctl==3.8.0" \
        "isal==1.9.1" \
    && python -m pip check \
    && rm -rf /tmp/wheels

# a non-root user (numeric, so that runAsNonRoot policies can check it); Apptainer runs as the calling user
RUN useradd --create-home --shell /bin/bash --uid 1000 --user-group ctp
USER 1000:1000
WORKDIR /home/ctp

ENTRYPOINT ["ctp-bids-app"]
CMD ["--help"]
