# Two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   set up, then bring up the Clos lab and show the VIP served (DSR)
#   make test   set up, then lint, type-check, and run every test tier
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := ananta controller mux hostagent bgp topologies

.PHONY: setup demo test test-unit test-cluster test-ovs test-e2e lint bench down clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/bin/ananta demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(PACKAGES)

test: setup lint
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest -m unit tests

test-cluster: setup
	$(PY) -m pytest -m cluster tests

test-ovs: setup
	$(PY) -m pytest -m ovs tests

test-e2e: setup
	$(PY) -m pytest -m e2e tests

# Every benchmark, then docs/benchmarks.md (and docs/reliability.md's table) from their
# results: the lab benchmarks share one fresh lab; the others build their own rigs.
bench: setup
	$(VENV)/bin/ananta lab down
	$(VENV)/bin/ananta lab up
	$(PY) bench/config_latency.py
	$(PY) bench/health_failover.py
	$(PY) bench/snat_latency.py
	$(PY) bench/full_path.py
	$(PY) bench/faults.py
	$(VENV)/bin/ananta lab down
	$(PY) bench/mux_forwarding.py
	$(PY) bench/mux_forwarding.py --driver af_packet
	$(PY) bench/manager_scale.py
	$(PY) bench/hashing.py
	$(PY) bench/report.py

down:
	$(VENV)/bin/ananta lab down

clean: down
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
