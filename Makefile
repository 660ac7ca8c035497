# Two entry points (see README): `make demo` runs the whole pipeline on the built-in demo data,
# `make test` runs the fast tests. Both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
# DVC keeps its state/index databases here rather than in /var/tmp/dvc (also set in .dvc/config,
# where a relative path is taken from the directory dvc runs in).
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/tmp/site-cache
PYTEST_WORKERS ?= 2
# GPU=1 (README "On a GPU"): keep the CUDA torch that $(PYTHON) already has. The venv sees $(PYTHON)'s
# packages, and pip is pinned to that torch and the torchvision built for it (tools/gpu_pins.py) instead of
# constraints.txt's CPU torch. Switching an existing .venv between the two: rm -rf .venv first.
GPU ?=
CONSTRAINTS := $(if $(GPU),-c constraints-gpu.txt -c .gpu-pins.txt,-c constraints.txt)
VENV_FLAGS := $(if $(GPU),--system-site-packages)

.PHONY: demo test test-all coverage install browser ui bench-prepare gpu-check clean

$(VENV)/.installed: pyproject.toml constraints.txt constraints-gpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(if $(GPU),$(BIN)/python tools/gpu_pins.py > .gpu-pins.txt)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	dvc repro

test: install
	pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadgroup

# Line coverage of the fast tier, per package (coverage.py via pytest-cov): the table lists each module,
# `coverage report` after it the totals.
coverage: install
	pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadgroup \
		--cov=common --cov=imaging --cov=dcgan --cov=evaluation --cov=pipeline --cov-report=term
	python tools/coverage_by_package.py

test-all: install browser
	pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

# Debian's Chromium and ChromeDriver, for the reader-page test in the slow tier (needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $$(command -v sudo) apt-get update -q && $$(command -v sudo) apt-get install -y -q chromium chromium-driver; }

ui: install
	mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench-prepare: install
	python bench/prepare_throughput.py

# The GPU path on this machine's GPU in a few minutes, one verdict per check (bench/gpu_check.py);
# on a machine without CUDA it says so and exits 0. On a fresh GPU machine: make gpu-check GPU=1
gpu-check: install
	python bench/gpu_check.py

clean:
	rm -rf data/raw/demo data/prepared
