# refine_dp_jax: one-command setup + run / test on a fresh machine.
# Python: jax 0.9.2 on CPython 3.11 (measured choice, see docs/environment.md). We look for a
# 3.11 interpreter on PATH, then under pyenv's root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON_311 := $(shell for p in python3.11 $$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/3.11*/bin/python3.11 2>/dev/null | sort -V -r); do $$p -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null && { command -v $$p; break; }; done)
EXPERIMENT ?= testbed
OUT ?= runs/$(EXPERIMENT)

.PHONY: venv test test-all run lint format bench clean osmesa gpu-llc

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON_311)" || { echo "error: no Python 3.11 found (PATH or pyenv); install it, e.g. 'pyenv install 3.11'"; exit 1; }
	@test -x $(PY) || $(PYTHON_311) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

# Two pytest workers. Work units (tests/conftest.py): the tests sharing the tiny pipeline run,
# one per environment in test_envs.py, else one per file; a unit stays on one worker so that its
# fixtures are compiled once. Units are handed out in collection order, the tiny run (the longest)
# first, not in xdist's default order of most tests first, which left it to run alone at the end.
# `make test` leaves out the tests marked `slow` (the four humanoid pipeline smoke runs);
# `make test-all` runs them too.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
test: venv
	$(PYTEST) -m "not slow"

test-all: venv
	$(PYTEST)

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

osmesa:
	@ldconfig -p | grep -q libOSMesa || { command -v apt-get >/dev/null && \
	  (apt-get install -y -q libosmesa6 >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libosmesa6 >/dev/null 2>&1)) || \
	  echo "warning: libosmesa6 missing and not installable: no video will be rendered"; }

run: venv osmesa
	$(VENV)/bin/refine-dp pipeline --experiment $(EXPERIMENT) --out $(OUT)

bench: venv
	$(PY) -m benchmarks.run --quick

# On a machine with a CUDA GPU and Python 3.12 (no venv: the device's own jax with CUDA and
# wheels carried in .whl/, see experiments/gpu_llc.sh): throughput figures, then the walking
# LLC for a wall budget, e.g. make gpu-llc ARGS="--out /tmp/gpu_llc --minutes 8".
ARGS ?= --out runs/gpu_llc
gpu-llc:
	bash experiments/gpu_llc.sh $(ARGS)

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache
