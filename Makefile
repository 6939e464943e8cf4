# Two commands on a fresh machine: `make up` runs the product, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: up test install install-dev bench lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "error: Python 3.11 or newer is required (PYTHON=$(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	@# Workflow code is re-imported for every run; bytecode spares compiling it each time.
	$(BIN)/python -m compileall -q core store engine workflows activities api cli sandbox
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

up: install
	$(BIN)/crisis up

# Test processes: each starts its own Temporal dev server and sandbox.
TEST_WORKERS ?= 2

test: install-dev
	$(BIN)/pytest -n $(TEST_WORKERS)

bench: install-dev
	$(BIN)/python bench/run_bench.py

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
