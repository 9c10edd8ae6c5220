# Targets list themselves: `make help`.
VENV ?= .venv
PY := $(VENV)/bin/python
# Every version, torch's included, is pinned in constraints.txt (scripts/freeze_constraints.py).
# torch goes first so that its pin takes the CPU build lying on this machine's disk rather than the
# multi-GB CUDA build that the same version number is on PyPI.
TORCH := $(shell grep -m1 '^torch==' constraints.txt)

.DEFAULT_GOAL := help
.PHONY: help install browser tools run demo test lint typecheck check check-deploy check-extras constraints dashboard bench bench-batching soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv (pinned by constraints.txt): CPU torch, the API, the worker, the client, dev tools

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt -e '.[api,worker,client,dev]'
	touch $@

browser: ## install Chromium from the system's packages for tests/browser (quick when already there)
	@sh scripts/install_chromium.sh

tools: $(VENV)/bin/promtool ## promtool and amtool into .venv/bin (unpacked from Debian's prometheus packages)

$(VENV)/bin/promtool: scripts/install_tools.sh | $(VENV)/.installed
	scripts/install_tools.sh $(VENV)/bin

run: install ## start Redis, a worker on the default model and the API; generate once; serve until Ctrl-C
	$(PY) scripts/run_local.py

demo: install ## like run, but exit after the first generation (writes var/demo.png)
	$(PY) scripts/run_local.py --once

# Two pytest-xdist processes: most tests wait on processes of their own (a worker warming up, a job
# running), so two overlap well even on two cores. A test file is one unit of work (tests/conftest.py).
TEST_PROCESSES ?= 2
test: install browser tools ## run the test suite (starts its own redis-server, API and worker processes, and Chromium)
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile

lint: install ## ruff check, ruff format --check over the repository; hadolint on the Dockerfile
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

typecheck: install ## mypy --strict on app, worker and contract
	$(VENV)/bin/mypy

check-deploy: install tools ## only the deployment checks (tests/deploy): compose, Prometheus, alerts, dashboard, k8s
	$(PY) -m pytest tests/deploy

check-extras: ## a fresh venv per extra (api, worker, client) installed alone, imported, and run together
	scripts/check_extras.sh

check: lint typecheck test check-extras ## everything CI runs

constraints: install ## rewrite constraints.txt from .venv's versions (after an upgrade that passed the tests)
	$(PY) scripts/freeze_constraints.py

dashboard: install ## rebuild deploy/grafana/dashboards/diffusion.json from scripts/build_dashboard.py
	$(PY) scripts/build_dashboard.py

bench: install ## per-step latency through the pipeline and end to end through the service (prints figures)
	$(PY) benchmarks/latency.py

bench-batching: install ## cross-request batching on the CPU: throughput 8 vs 1, serving efficiency, lone-job latency
	$(PY) benchmarks/batching.py

soak: install ## 5000 jobs from 16 clients against Redis, the API and two workers; lost, duplicated, p99s (benchmarks/soak.py)
	$(PY) benchmarks/soak.py

clean: ## remove run outputs (var/) and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
