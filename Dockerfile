# The training image every launch target runs (`tuneline node ...`): CUDA, Python 3.11, the CUDA build
# of the pinned torch, then tuneline with its dependencies (bitsandbytes for QLoRA included).
#
#   docker build -t us-docker.pkg.dev/PROJECT/REPO/tuneline:0.1.0 .
#   docker push us-docker.pkg.dev/PROJECT/REPO/tuneline:0.1.0
#
# (or without Docker: gcloud builds submit --tag us-docker.pkg.dev/PROJECT/REPO/tuneline:0.1.0 .)
# Then set launch.image to that URI.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    VIRTUAL_ENV=/opt/tuneline \
    PATH=/opt/tuneline/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common ca-certificates git \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/tuneline

WORKDIR /src
# The CUDA build of the same torch version constraints.txt pins (2.13.0 matches 2.13.0+cu128).
COPY constraints.txt ./
RUN pip install --upgrade pip \
    && pip install --index-url "$TORCH_INDEX" "torch==$(sed -n 's/^torch==//p' constraints.txt)"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install -c constraints.txt . && tuneline --help > /dev/null

WORKDIR /workspace
CMD ["tuneline", "--help"]
