# Two commands do everything on a fresh machine: `make demo` and `make test` (CI adds `make test-slow`).
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup models peers demo test test-slow test-huge lint bench

$(STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh

setup: $(STAMP)

models: $(STAMP)
	scripts/setup_models.sh

peers: $(STAMP)
	scripts/setup_peers.sh

demo: $(STAMP)
	$(VENV)/bin/netshrink demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow and not huge"

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "slow and not huge"

test-huge: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m huge

lint: $(STAMP)
	$(VENV)/bin/ruff check netshrink tests benchmarks

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/baselines.py
	$(VENV)/bin/python benchmarks/codec.py
	$(VENV)/bin/python benchmarks/lossless.py
	$(VENV)/bin/python benchmarks/deep_compression.py
