#!/usr/bin/env bash
# Make what bench/gpu_run.sh takes to the GPU machine, which has no network: both are gitignored.
#   bench/gpu_wheels/  diffusers, omegaconf (it carries its own antlr4 runtime) and mnist1d, pure-Python wheels
#                      pinned to the versions tested here; everything else pdiff needs is on that machine
#   bench/gpu_data/mnist.tar.gz  MNIST/raw, unpacked files in torchvision's layout (the data folder beside the
#                      checkout, ../shared/data, is not copied there)
# Usage: bash bench/gpu_pack.sh [DATA_DIR]   (DATA_DIR holds MNIST/raw; default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
rm -rf bench/gpu_wheels bench/gpu_data
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d bench/gpu_wheels \
    diffusers==0.42.1 omegaconf==2.4.0 mnist1d==0.0.2.post1
mkdir -p bench/gpu_data
tar -czf bench/gpu_data/mnist.tar.gz -C "$data" MNIST/raw
du -sh bench/gpu_wheels bench/gpu_data
