# `make test` and `make demo` set up .venv themselves (CPU PyTorch, ROS 2 wheels from PyPI).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build that lies on this machine's disk; a bare "torch" would pull a multi-GB CUDA build.
TORCH_CPU := torch==2.13.0

.PHONY: test test-all lint demo bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e ".[ros,torch,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# ruff (lint + format check) over the repository, mypy over the vehicle core and the offline tools
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu"

# the whole mission on synthetic data, about ten minutes on 2 CPU cores; outputs in demo_out/ (re-runs reuse them)
demo: $(STAMP)
	$(PY) -m xview_testbed.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) demo_out build *.egg-info
