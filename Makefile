PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(STAMP)

demo: $(STAMP)
	$(BIN)/tsuchi demo

lint: $(DEVSTAMP)
	$(BIN)/ruff check tsuchi tests benchmarks
	$(BIN)/mypy --strict
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

include benchmarks/Makefile.inc

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
