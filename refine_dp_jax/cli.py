"""The ``refine-dp`` command line. Each subcommand is a function whose arguments tyro turns into
flags (configs are frozen dataclasses; any field can be overridden, e.g.
``refine-dp probe --cfg.dppo.actor-lr 3e-4``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import tyro

from refine_dp_jax.errors import ConfigError
from refine_dp_jax.probe import BanditProbeConfig


def setup_process() -> None:
    """Entry-point-only process setup (library code never sets flags or env vars at import)."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    import jax

    cache = os.environ.get("REFINE_DP_JAX_CACHE", os.path.expanduser("~/.cache/refine_dp_jax/xla"))
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def probe(cfg: BanditProbeConfig = BanditProbeConfig(), out: Path | None = None) -> None:
    """DPPO bandit probe: pre-train a DP on bimodal demos, fine-tune it with DPPO on the sparse
    reward of one mode, print the rewarded fraction before and after (JSON; also to ``out``)."""
    setup_process()
    from refine_dp_jax.probe import run_bandit_probe

    text = json.dumps(run_bandit_probe(cfg), indent=1)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)


def commands() -> dict:
    return {"probe": probe}


def main(argv: list[str] | None = None) -> None:
    try:
        tyro.extras.subcommand_cli_from_dict(
            commands(), args=sys.argv[1:] if argv is None else argv
        )
    except ConfigError as e:
        print(f"refine-dp: invalid configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
