# Runstream — every target bootstraps uv and the virtual environment by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
PY := .venv/bin/python
# The test suites: the machine's Postgres when it answers (each test creates and drops a
# database of its own on it); otherwise the test harness starts a throwaway cluster.
# `make run` does not use this: `runstream up` picks its own `runstream` database.
PG_LOCAL := postgresql://postgres@127.0.0.1:5432/postgres
TEST_DATABASE_URL := $(or $(DATABASE_URL),$(shell (command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 && echo $(PG_LOCAL)) 2>/dev/null))
test test-fast eval bench chaos: export DATABASE_URL := $(TEST_DATABASE_URL)

.PHONY: help bootstrap sync run test test-fast lint proto eval bench bench-peers chaos browser-deps helm-lib helm-lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv

bootstrap: $(if $(filter $(TOOLS)/bin/uv,$(UV)),$(TOOLS)/bin/uv) ## install uv (if missing)

sync: bootstrap ## create .venv from uv.lock (all members + dev tools)
	$(UV) sync --locked --all-packages

run: sync ## run the whole stack locally (runstream up)
	.venv/bin/runstream up

test: sync helm-lib ## run every test suite (real nats-server and Postgres)
	$(PY) -m pytest --durations=15

test-fast: sync ## unit tests only
	$(PY) -m pytest libs services

lint: sync ## ruff + mypy on libs and services
	.venv/bin/ruff check libs services tests scripts
	.venv/bin/mypy $(addprefix -p runstream.,contracts bus store telemetry runtime pipeline testing gateway projector analysis_worker execution_worker chart_worker cli)

proto: sync ## regenerate proto/ (events JSON Schema, AsyncAPI, OpenAPI)
	$(PY) scripts/gen_proto.py proto

eval: sync ## planner evaluation: right / refused / wrong per question family (tests/planner)
	$(PY) -m tests.planner.report

bench: sync ## benchmarks: print throughput and latency figures
	$(PY) -m pytest tests/bench -s -q -p no:cacheprovider --override-ini="norecursedirs=.* node_modules" \
	  --ignore=tests/bench/peers

bench-peers: sync ## side by side with Celery + Redis (Redis at 127.0.0.1:6379, DB 11): one table
	$(PY) -m pytest tests/bench/peers -s -q -p no:cacheprovider --override-ini="norecursedirs=.* node_modules"

chaos: sync ## chaos tests: kill workers and servers mid-flight
	$(PY) -m pytest tests/chaos -s -q --override-ini="norecursedirs=.* node_modules"

browser-deps: ## install Chromium (Debian package) and playwright-core for the browser test
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	cd tests/browser && npm ci --no-audit --no-fund

helm-lib: sync ## fetch the Helm library for the chart-lint tests, fetched once (best effort)
	@test -f .tools/helm-sdkpy/libhelm_sdkpy.so || command -v helm >/dev/null || \
	  UV=$(UV) $(PY) -c "import sys; sys.path.insert(0, 'deploy/helm'); import lint; lint.fetch_library()" || \
	  echo "Helm library not fetched: the two chart-lint tests will be skipped"

helm-lint: sync ## lint the Helm chart offline (helm if on PATH, else the Helm library from PyPI)
	UV=$(UV) $(PY) deploy/helm/lint.py --fetch

clean: ## remove the environment and local state
	rm -rf .venv $(TOOLS) .runstream .pytest_cache .mypy_cache .ruff_cache
