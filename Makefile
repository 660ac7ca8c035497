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

.PHONY: demo test test-all install browser ui bench-prepare clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	dvc repro

test: install
	pytest -q -m "not slow" -n $(PYTEST_WORKERS) --dist loadgroup

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

clean:
	rm -rf data/raw/demo data/prepared
