# podhop: two commands on a fresh Debian 12/13 machine, as root:
#   make demo   set everything up, then run the main job
#   make test   set everything up, then run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PODHOP := $(VENV)/bin/podhop
# Debian packages needed before Python can even be installed; the rest is `podhop setup`.
BOOTSTRAP_DEBS := python3 python3-venv python3-pip

.PHONY: demo test setup venv lint typecheck unit integration bench cost-model clean

demo: setup
	$(PODHOP) demo

test: setup lint typecheck
	$(VENV)/bin/python -m pytest -q tests

setup: venv
	$(PODHOP) setup

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if ! $(PYTHON) -c 'import venv, ensurepip' 2>/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BOOTSTRAP_DEBS); fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/python -m pytest -q tests/unit

integration: setup
	$(VENV)/bin/python -m pytest -q tests/integration

bench: setup
	$(VENV)/bin/python benchmarks/cluster_bench.py
	$(VENV)/bin/python benchmarks/cli_bench.py
	$(VENV)/bin/python benchmarks/sim_bench.py
	$(VENV)/bin/python benchmarks/podman_bench.py

# The cost model's defaults: fitted to the shipped migration benchmark (tests check they match).
cost-model: venv
	$(PODHOP) calibrate benchmarks/results/migration.json -o src/podhop/policies/data/cost-model.json

clean:
	-$(PODHOP) cluster delete --all
	rm -rf $(VENV) build *.egg-info
