# intentflow: `make help` lists the targets. CI calls the same targets as people.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[train,dev,bench]'
	$(PY) -c "from streams.localkafka import ensure_jars; ensure_jars(quiet=True)"
	@touch $(STAMP)

.PHONY: setup
setup: $(STAMP) ## Create .venv, install everything and resolve the Kafka jars (idempotent)

.PHONY: test
test: setup ## Run the whole suite (starts its own Kafka broker)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: setup ## Run the tests that need no broker
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

.PHONY: lint
lint: setup ## ruff (lint and format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: setup ## Format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: kafka-start kafka-stop
kafka-start: setup ## Start the local Kafka broker
	$(VENV)/bin/intentflow kafka start
kafka-stop: setup ## Stop the local Kafka broker
	$(VENV)/bin/intentflow kafka stop

.PHONY: bench
bench: setup ## Benchmarks on their own Kafka broker (BENCH_EVENTS, BENCH_REPEATS): bench/results/
	@test -x $(VENV)/bin/py-spy || $(PIP) install --quiet py-spy
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m bench.run

.PHONY: clean
clean: ## Remove caches and local state (not the venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var build

DEMO_SECONDS ?= 0
DEMO_DATA ?= sim
.PHONY: demo
demo: setup ## Broker, model, worker, live shoppers and scores (DEMO_SECONDS=60, DEMO_DATA=taobao)
	$(VENV)/bin/intentflow demo --seconds $(DEMO_SECONDS) --data $(DEMO_DATA)
