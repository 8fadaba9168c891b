#!/usr/bin/env bash
# `make gpu-llc ARGS="--out DIR ..."`: experiments/gpu_llc.py on a machine with a CUDA GPU
# and Python 3.12 whose jax (with CUDA), flax, optax, orbax-checkpoint and chex are installed,
# as on the lent device (jax 0.11.2). Nothing is downloaded here: the other packages come
# from wheels prepared beforehand in .whl/ (on a machine with a network):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl mujoco==3.17.0 mujoco-mjx==3.17.0 tyro==1.0.17 tensorboardX \
#     trimesh glfw pyopengl docstring-parser typeguard shtab websockets imageio
# (not our pinned flax 0.12.6: it calls jax.core APIs that jax 0.11 removed). On the device
# tool: carry [".whl"], e.g. `bash experiments/gpu_llc.sh --out $OUT --phase bench`, then
# `... --phase train --minutes 7` (each call under its 10-minute limit).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=${GPU_SITE:-/tmp/refine_dp_site}
    rm -rf "$SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import jax, flax, optax, chex, orbax.checkpoint, mujoco, mujoco.mjx, tyro" || {
    echo "gpu-llc: missing packages; prepare .whl/ as this script's header says" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "install + imports: $(( $(date +%s) - T0 )) s"
export PYTHONUNBUFFERED=1 REFINE_DP_JAX_NO_BAR=1 TF_CPP_MIN_LOG_LEVEL=3
# XLA's GPU autotuning of the fused step's many kernels costs minutes of a lent machine
export XLA_FLAGS="${XLA_FLAGS:---xla_gpu_autotune_level=0}"
exec python3 -m experiments.gpu_llc "$@"
