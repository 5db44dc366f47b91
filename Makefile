# Two commands a newcomer needs: `make demo` and `make test`. Both set up whatever is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/vidyn demo --out out/demo

test: setup
	$(VENV)/bin/ruff check vidyn_ros test bench launch
	$(PY) -m pytest -q test

lint: setup
	$(VENV)/bin/ruff check vidyn_ros test bench launch

bench: setup
	$(PY) bench/rig_throughput.py

clean:
	rm -rf out .pytest_cache
