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
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml | system-packages
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[train,dev,bench]'
	$(PY) -c "from streams.devtools.localkafka import ensure_jars; ensure_jars(quiet=True)"
	@touch $(STAMP)

.PHONY: setup
setup: $(STAMP) kustomize ## System packages, .venv, Kafka jars, kustomize: everything (idempotent)

# Commands the suite and the demo need, as command:Debian package. The JDK and Maven run the local
# Kafka broker; promtool and prometheus check and run the Prometheus files; docker-compose
# validates docker-compose.yml (no Docker engine needed).
SYSTEM_PACKAGES := java:openjdk-17-jre-headless mvn:maven promtool:prometheus \
	prometheus:prometheus docker-compose:docker-compose

.PHONY: system-packages
system-packages: ## Install missing system packages (root with apt-get), or print the command to run
	@missing=$$(for pair in $(SYSTEM_PACKAGES); do \
	    command -v "$${pair%%:*}" >/dev/null 2>&1 || echo "$${pair#*:}"; \
	  done | sort -u | tr '\n' ' ' | sed 's/ $$//'); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages: $$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing system packages: $$missing. Install them, then run make setup again:" >&2; \
	    echo "  sudo apt-get install -y --no-install-recommends $$missing" >&2; \
	    exit 1; \
	  fi; \
	fi
	@# Debian's prometheus package starts a server on :9090 as user prometheus; tests run their own.
	@if pgrep -x -u prometheus prometheus >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "stopping the Debian prometheus service (the tests start their own servers)"; \
	    systemctl stop prometheus 2>/dev/null || service prometheus stop >/dev/null 2>&1 || \
	      pkill -x -u prometheus prometheus || true; \
	  else \
	    echo "note: the Debian prometheus service is running; stop it: sudo systemctl stop prometheus" >&2; \
	  fi; \
	fi

# deploy/kubernetes is rendered with kubectl's built-in kustomize, or with kustomize itself, built
# with Go into .venv/bin when neither is installed.
KUBECTL ?= kubectl
KUSTOMIZE_VERSION := v5.5.0
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

.PHONY: kustomize
kustomize: $(STAMP) ## Make sure kubectl or kustomize can render deploy/kubernetes
	@if command -v $(KUBECTL) >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 || \
	  test -x $(VENV)/bin/kustomize; then exit 0; fi; \
	if [ -x "$(GO)" ]; then \
	  echo "kubectl is missing: installing kustomize $(KUSTOMIZE_VERSION) into $(VENV)/bin (go install)"; \
	  GOBIN="$(abspath $(VENV))/bin" "$(GO)" install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION); \
	else \
	  echo "neither kubectl nor kustomize is installed, and there is no Go to build kustomize:" >&2; \
	  echo "  install kubectl, or Go (then make setup builds kustomize $(KUSTOMIZE_VERSION))" >&2; \
	  exit 1; \
	fi

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

.PHONY: compile
compile: setup ## Opt-in: the per-event core compiled with mypyc into build/compiled (run with PYTHONPATH=build/compiled)
	$(PY) -m streams.devtools.compile build/compiled

.PHONY: clean
clean: ## Remove caches and local state (not the venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache var build

.PHONY: k8s-render k8s-alerts
k8s-render: kustomize ## Print the Kubernetes manifests of deploy/kubernetes
	@if command -v $(KUBECTL) >/dev/null 2>&1; then $(KUBECTL) kustomize deploy/kubernetes; \
	else PATH="$(CURDIR)/$(VENV)/bin:$$PATH" kustomize build deploy/kubernetes; fi
k8s-alerts: setup ## Regenerate deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/alerts.yml
	$(PY) deploy/kubernetes/sync_alerts.py

DEMO_SECONDS ?= 0
DEMO_DATA ?= sim
.PHONY: demo
demo: setup ## Broker, model, worker, live shoppers and scores (DEMO_SECONDS=60, DEMO_DATA=taobao)
	$(VENV)/bin/intentflow demo --seconds $(DEMO_SECONDS) --data $(DEMO_DATA)
