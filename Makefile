# Targets list themselves: `make help`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help install browser run demo test lint typecheck check bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv with the CPU torch build, the API, the worker and dev tools

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[api,worker,client,dev]'
	touch $@

browser: ## install Chromium from the system's packages for tests/browser (quick when already there)
	@sh scripts/install_chromium.sh

run: install ## start Redis, a worker on the default model and the API; generate once; serve until Ctrl-C
	$(PY) scripts/run_local.py

demo: install ## like run, but exit after the first generation (writes var/demo.png)
	$(PY) scripts/run_local.py --once

test: install browser ## run the test suite (starts its own redis-server, API and worker processes, and Chromium)
	$(PY) -m pytest

lint: install ## ruff check and ruff format --check over the whole repository
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install ## mypy --strict on app, worker and contract
	$(VENV)/bin/mypy

check: lint typecheck test ## everything CI runs

bench: install ## per-step latency through the pipeline and end to end through the service (prints figures)
	$(PY) benchmarks/latency.py

clean: ## remove run outputs (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
