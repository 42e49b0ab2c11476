# Every target sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint browser java bench bench-spark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q src
	@touch $(STAMP)

demo: setup
	rm -f demo.duckdb demo.duckdb.wal
	$(BIN)/retain ingest --db demo.duckdb --format cdnow --as-of 1998-06-30 src/retain/datasets/data/CDNOW_master.txt.gz
	$(BIN)/retain status --db demo.duckdb
	$(BIN)/retain fit --db demo.duckdb --unit W --learned
	$(BIN)/retain score --db demo.duckdb --margin 0.3
	$(BIN)/retain backtest --db demo.duckdb
	$(BIN)/retain metrics --db demo.duckdb --top 5
	$(BIN)/retain segments --db demo.duckdb
	$(BIN)/retain at-risk --db demo.duckdb --limit 10
	$(BIN)/retain whatif --db demo.duckdb --dropout-change -0.1
	$(BIN)/retain loyalty build --db demo.duckdb
	$(BIN)/retain loyalty report --db demo.duckdb
	$(BIN)/retain report --db demo.duckdb --out report.html
	$(BIN)/retain campaigns run --db demo.duckdb --campaigns src/retain/campaigns/examples.toml --dry-run --channel file --now 1998-07-01T10:00:00
	@echo
	@echo "The dashboard: $(BIN)/retain serve --db demo.duckdb   then open http://127.0.0.1:8765"

lint: setup
	$(BIN)/ruff check --no-cache src tests benchmarks
	$(BIN)/ruff format --check --no-cache src tests benchmarks
	$(BIN)/mypy

# The dashboard tests drive Debian's chromium; install it when this user can. A busy
# package manager (another apt or dpkg holding its lock) is waited for and retried,
# BROWSER_TRIES times with BROWSER_PAUSE seconds between; if chromium still cannot be
# installed the browser tests are skipped, or fail in CI (RETAIN_REQUIRE_BROWSER=1).
BROWSER_TRIES ?= 5
BROWSER_PAUSE ?= 15

browser:
	@sh tools/apt-install.sh chromium chromium "the browser tests" RETAIN_REQUIRE_BROWSER \
	  $(BROWSER_TRIES) $(BROWSER_PAUSE)

# The Spark tests run Spark in local mode, which needs Java 17 or later: Debian's, installed
# the same way (they fail in CI without it, are skipped elsewhere).
java:
	@sh tools/apt-install.sh java openjdk-17-jre-headless "the Spark tests" RETAIN_REQUIRE_SPARK \
	  $(BROWSER_TRIES) $(BROWSER_PAUSE)

test: setup lint browser java
	$(BIN)/pytest -q

PEERS := benchmarks/.venv-peers

$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet lifetimes==0.11.3 pyarrow
	@touch $@

# each peer comparison and the CLI path: BENCH_RUNS fresh-process runs a side (median, min, max)
BENCH_RUNS ?= 3

# the source's bytecode compiled first, as installing a wheel compiles it: each command's
# time is then its own work, not Python compiling retain's modules again
bench: setup $(PEERS)/.installed
	$(BIN)/python -m compileall -q src
	$(BIN)/python benchmarks/run.py --runs $(BENCH_RUNS)

# Spark's path beside the store's, on 3.2M and 20.2M generated orders (local[2]; long)
bench-spark: setup java
	$(BIN)/python benchmarks/bench_spark.py --customers 1000000,6250000 --write

clean:
	rm -rf $(VENV) *.duckdb *.duckdb.wal .pytest_cache .mypy_cache .ruff_cache
