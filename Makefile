# Quick start: `make demo` runs the live pipeline against the gateway simulator,
# `make test` runs the test suite. Both create or reuse .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 20

.PHONY: demo test lint bench serve gateway clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ibstream demo --seconds $(DEMO_SECONDS)

test: $(STAMP)
	$(BIN)/ruff check ibstream tests bench server
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ibstream tests bench server
	$(BIN)/ruff format --check ibstream tests bench server

bench: $(STAMP)
	$(BIN)/python -m bench.throughput

serve: $(STAMP)
	$(BIN)/ibstream serve --demo

gateway: $(STAMP)
	$(BIN)/ibstream gateway

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
