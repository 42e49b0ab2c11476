# Every target sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: setup
	rm -f demo.duckdb demo.duckdb.wal
	$(BIN)/retain ingest --db demo.duckdb --format cdnow --as-of 1998-06-30 src/retain/datasets/data/CDNOW_master.txt.gz
	$(BIN)/retain status --db demo.duckdb
	$(BIN)/retain customers --db demo.duckdb --limit 10

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest -q

PEERS := benchmarks/.venv-peers

$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet lifetimes==0.11.3 pyarrow
	@touch $@

bench: setup $(PEERS)/.installed
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) *.duckdb *.duckdb.wal .pytest_cache .mypy_cache .ruff_cache
