# modelship — top-level entry points. Each area keeps its own targets in mk/*.mk.
# The two commands the README opens with:
#   make demo   — local control plane + operator + ModelDeployments rolling out
#   make test   — installs everything it needs, then runs the whole suite
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)

.DEFAULT_GOAL := help

.PHONY: help setup venv lint test test-unit
help: ## list targets
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

venv: ## create .venv with every extra (idempotent)
	@bash hack/python-env.sh

setup: ## install everything the tests need (apt packages, venv, Go-built tools)
	@bash hack/setup.sh

lint: venv ## ruff and mypy as configured in pyproject.toml (the pure core under --strict)
	$(PY) -m ruff check .
	$(PY) -m mypy

test: setup lint ## lint and types, then the whole suite: unit, server, e2e, images
	$(PY) -m pytest tests

test-unit: venv ## unit + server tiers only (no cluster, no Docker)
	$(PY) -m pytest tests/unit tests/server

-include mk/*.mk
