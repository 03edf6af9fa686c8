# The two commands a newcomer needs: `make run` and `make test`. Each creates the virtual
# environment in .venv (if missing or older than pyproject.toml) and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# the service: migrate, load the shipped customers, train if needed, plan a demo campaign,
# serve the API with its docs on 127.0.0.1:8000 (it prints how to get a key)
run: $(BIN)/.installed
	$(BIN)/scripts-engine serve --demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_scoring.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
