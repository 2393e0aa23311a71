#!/usr/bin/env bash
# Regenerate the lock files the images and the GitHub workflow install from (uv pip compile).
#   serve.txt  the API image: the `serve` extra, no PyTorch.
#   train.txt  the training image: `train` and `gcp`, WITHOUT torch, torchvision and their CUDA
#              libraries. PyTorch is pinned in pyproject.toml and installed first from the index
#              that picks its build (CPU-only or CUDA); its own metadata pins its CUDA libraries.
# Run it after changing a dependency in pyproject.toml: bash requirements/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes)
uv pip compile pyproject.toml --extra serve "${target[@]}" -o requirements/serve.txt
torch_family=(torch torchvision triton cuda-bindings cuda-pathfinder cuda-toolkit)
torch_family+=(nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime)
torch_family+=(nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver)
torch_family+=(nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink)
torch_family+=(nvidia-nvshmem-cu13 nvidia-nvtx)
uv pip compile pyproject.toml --extra train --extra gcp "${target[@]}" \
  "${torch_family[@]/#/--no-emit-package=}" -o requirements/train.txt
