"""One process of the two-process test: jax.distributed over 127.0.0.1 with CPU collectives.

usage: multihost_worker.py PROCESS_ID PORT OUT_DIR
Both processes run two LLC training iterations of point_reach_tiny on one mesh spanning both
processes' devices, then write their final parameters to OUT_DIR/params_<id>.npz.
"""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["REFINE_DP_JAX_NO_BAR"] = "1"

import jax  # noqa: E402

pid, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402

import experiments  # noqa: E402
from refine_dp_jax import pipeline  # noqa: E402
from refine_dp_jax.train.llc import make_llc_train  # noqa: E402
from refine_dp_jax.train.loop import run_loop  # noqa: E402
from refine_dp_jax.train.sharding import make_mesh  # noqa: E402

assert jax.process_count() == 2, jax.process_count()
cfg = experiments.get("point_reach_tiny")
parts = pipeline.build(cfg)
init, step, _ = make_llc_train(parts.env, cfg.llc)
state = jax.jit(init)(jax.random.PRNGKey(0))
state, _ = run_loop(os.path.join(out, "run"), state, step, 2, 100, "multihost", mesh=make_mesh())
leaves = [np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True))
          for x in jax.tree.leaves(state.learner)]  # fmt: skip
np.savez(os.path.join(out, f"params_{pid}.npz"), *leaves)
print(f"process {pid}: devices {jax.device_count()} done")
jax.distributed.shutdown()
