# Every chore has one entry point here. The venv is (re)built when pyproject.toml or client/pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8000

.PHONY: wrk browser fashion-mnist install run migrate test test-fast bench bench-load lint clean

$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, not {sys.version}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[worker,dev,monitor]'
	$(BIN)/pip install --quiet -e ./client  # the trainer CLI / SDK, its own distribution; the tests drive it
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python -m core.migrate

## The API on 127.0.0.1:$(PORT) and one Celery worker, on SQLite + the SQLAlchemy broker unless
## DATABASE_URL / CELERY_BROKER_URL say otherwise. Ctrl-C stops both.
run: install fashion-mnist
	PORT=$(PORT) scripts/run.sh

## Debian's Fashion-MNIST (the built-in fashion_mnist): installed when missing and this is root with apt;
## otherwise one line says how (without it the dataset is listed as unavailable and recipes naming it get a 422).
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fashion-mnist:
	@test -f $(FASHION_MNIST) || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "fashion_mnist is not installed: run 'sudo apt-get install dataset-fashion-mnist' (Debian bookworm or later)"; fi; }

## wrk, which bench.polling and bench.memory drive the API with (installed when missing; needs root).
wrk:
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)

## Debian's Chromium, for the job-page tests (installed when missing; needs root).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: install browser fashion-mnist
	$(BIN)/pytest

## Schema, API and training unit tests only (no worker process).
test-fast: install
	$(BIN)/pytest -m "not worker"

## Every benchmark (about 60 min, the Fashion-MNIST ones 40; each writes bench/results/*.json and prints its table; README quotes them).
bench: install wrk fashion-mnist
	$(BIN)/python -m bench.overhead
	$(BIN)/python -m bench.overhead --redis
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.polling
	$(BIN)/python -m bench.download
	$(BIN)/python -m bench.scale --embedded
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.sparsity
	$(BIN)/python -m bench.checkpoint
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.overhead --fashion
	$(BIN)/python -m bench.overhead --fashion --redis
	$(BIN)/python -m bench.throughput --fashion
	$(BIN)/python -m bench.fixed_costs
	$(BIN)/python -m bench.upload_scale
	$(BIN)/python -m bench.inference

## 50 pollers + 10 submitters for 60 s with wrk while a job trains (installs wrk if missing).
bench-load: install
	$(BIN)/python -m bench.load 60

## ruff's rules and its format check, mypy (strict on core/ and client/trainer_client/; [tool.mypy] in
## pyproject.toml names the packages), and the container files (lint-containers, deploy/podman/compose.mk).
LINTED := core service worker stack client tests bench examples
lint: install lint-containers
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf var/ .pytest_cache

-include deploy/podman/compose.mk
