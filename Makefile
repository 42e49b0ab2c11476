# Every target sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser bench clean

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
	$(BIN)/retain fit --db demo.duckdb --unit W
	$(BIN)/retain score --db demo.duckdb
	$(BIN)/retain metrics --db demo.duckdb --margin 0.3 --top 5
	$(BIN)/retain segments --db demo.duckdb
	$(BIN)/retain at-risk --db demo.duckdb --limit 10
	$(BIN)/retain report --db demo.duckdb --out report.html
	@echo
	@echo "The dashboard: $(BIN)/retain serve --db demo.duckdb   then open http://127.0.0.1:8765"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# The dashboard tests drive Debian's chromium; install it when this user can.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "chromium is not installed and this user cannot install it: browser tests will be skipped"; exit 0; fi; \
	  echo "installing chromium for the browser tests ..."; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup lint browser
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
