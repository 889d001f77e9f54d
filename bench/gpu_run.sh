#!/usr/bin/env bash
# The GPU machine's whole check in one unattended command (that machine has no network and is lent briefly):
# put the carried wheels and MNIST in place, then `python -m bench.gpu` under a hard timeout.
#   bash bench/gpu_run.sh [bench.gpu options]       e.g. --device cpu --toy to try it on a CPU
# Needs bench/gpu_wheels/ and bench/gpu_data/mnist.tar.gz, made by `bash bench/gpu_pack.sh` (carry both).
# Writes into $OUT (default /tmp/pdiff-gpu-out): gpu.json, gpu_section.md, steps.log and gpu.log.
# Environment: INSTALL=auto (default: install the wheels only where diffusers, omegaconf or mnist1d is
# missing), yes or no; BUDGET (seconds for bench.gpu's steps, default 440; the hard timeout is 20 s more).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/pdiff-gpu-out}
python=${PYTHON:-python3}
site=/tmp/pdiff-gpu-site
data=/tmp/pdiff-gpu-data
budget=${BUDGET:-440}
mkdir -p "$out"
exec > >(tee "$out/gpu.log") 2>&1
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
case ${INSTALL:-auto} in
    auto) "$python" -c "import diffusers, omegaconf, mnist1d" 2>/dev/null && install=no || install=yes ;;
    *) install=$INSTALL ;;
esac
if [ "$install" = yes ]; then
    rm -rf "$site"
    # pip where it works; a pure-Python wheel is a zip of its files, so unpacking it is the fallback
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" bench/gpu_wheels/*.whl \
        || for wheel in bench/gpu_wheels/*.whl; do "$python" -m zipfile -e "$wheel" "$site"; done
    export PYTHONPATH="$PYTHONPATH:$site"
fi
rm -rf "$data" && mkdir -p "$data" && tar -xzf bench/gpu_data/mnist.tar.gz -C "$data" || echo "gpu_run: no MNIST unpacked"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout --kill-after 10 $((budget + 20)) "$python" -m bench.gpu --out "$out" --data-dir "$data" --budget-s "$budget" "$@"
code=$?
echo "gpu_run: bench.gpu exited with $code"
exit $code
