#!/bin/bash
# One lent-GPU run: DP-only DPPO sweep on humanoid_table_lift from a carried stage-1-3 run.
#
# Prepare here (the device has jax 0.11.2, flax, optax, orbax, chex of its own: carry NOT our
# pinned flax 0.12.6, which calls jax.core APIs that jax 0.11 removed):
#   echo /.whl/ >> .git/info/exclude; echo /.carry/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl mujoco==3.17.0 mujoco-mjx==3.17.0 tyro==1.0.17 tensorboardX \
#     trimesh glfw pyopengl docstring-parser typeguard shtab websockets
#   mkdir -p .carry/lift/dp; cp -r RUN/config.json RUN/llc RUN/demos .carry/lift/
#   cp -r RUN/dp/final RUN/dp/done.json .carry/lift/dp/      # RUN: stages llc, demos, dp done
#   cp docs/results/gpu_lift_sweep/gpu.sh .carry/
# Then device run: `rm -rf /tmp/site; MINUTES=6 ENVS=1024 bash .carry/gpu.sh`, carry .whl .carry,
# timeout_s 590 (install 5 s, compile 94 s, 4.6 s per iteration, evaluation ~2 min).
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 REFINE_DP_JAX_NO_BAR=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
python3 -c "import jax, mujoco, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, jax.devices(), 'mujoco', mujoco.__version__, 'flax', flax.__version__)" 2>&1 | tee -a $OUT/gpu.txt
echo "install+import: $(( $(date +%s) - T0 )) s"
RUN=/tmp/run; rm -rf $RUN; cp -r .carry/lift $RUN
(while sleep 10; do cp $RUN/sweep/metrics.jsonl $OUT/ 2>/dev/null; done) &
XLA_FLAGS=--xla_gpu_autotune_level=0 python3 -m refine_dp_jax.cli sweep --experiment humanoid_table_lift --out $RUN --seeds 0 1 \
  --grid actor_lr=${LRS:-1e-4,3e-5} --joint False --minutes ${MINUTES:-5.5} \
  --set finetune.num_envs=${ENVS:-1024} finetune.iterations=300 2>&1 | tee $OUT/log
for f in results.json results.md success.png metrics.jsonl members.json; do cp $RUN/sweep/$f $OUT/ 2>/dev/null; done
echo "total: $(( $(date +%s) - T0 )) s"
