# Two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   set up, then bring up the Clos lab and show the VIP served (DSR)
#   make test   set up, then lint, type-check the pure core, and run every test tier
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PURE_CORE := ananta/config.py ananta/bridges.py ananta/node.py ananta/ofctl_dump.py ananta/apply_plan.py \
	controller/model.py controller/config.py controller/flows.py controller/pipeline.py \
	controller/compile_mux.py controller/compile_host.py controller/desired.py \
	controller/reconcile.py controller/state.py controller/ledger.py controller/api.py \
	bgp/commands.py mux/config.py mux/programmed.py \
	hostagent/config.py topologies/spec.py topologies/configs.py topologies/netns.py \
	topologies/daemons.py

.PHONY: setup demo test test-unit test-ovs test-e2e lint down clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/bin/ananta demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PURE_CORE)

test: setup lint
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest -m unit tests

test-ovs: setup
	$(PY) -m pytest -m ovs tests

test-e2e: setup
	$(PY) -m pytest -m e2e tests

down:
	$(VENV)/bin/ananta lab down

clean: down
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
