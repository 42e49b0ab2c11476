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
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$RETAIN_REQUIRE_BROWSER" = 1 ]; then \
	  then_what="RETAIN_REQUIRE_BROWSER=1, so the browser tests will fail"; \
	else then_what="the browser tests will be skipped"; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	  echo "chromium is not installed and this user cannot install it: $$then_what"; exit 0; fi; \
	log=$$(mktemp); try=1; \
	while :; do \
	  echo "installing chromium for the browser tests (try $$try of $(BROWSER_TRIES)) ..."; \
	  if { $$SUDO apt-get -o DPkg::Lock::Timeout=$(BROWSER_PAUSE) update -qq && \
	       DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=$(BROWSER_PAUSE) \
	         install -y -qq chromium; } >"$$log" 2>&1; then \
	    rm -f "$$log"; echo "chromium installed"; exit 0; fi; \
	  if ! grep -qiE 'could not get lock|unable to acquire|unable to lock' "$$log" || [ "$$try" -ge $(BROWSER_TRIES) ]; then break; fi; \
	  echo "the package manager is busy (another apt or dpkg holds its lock): trying again in $(BROWSER_PAUSE) s"; \
	  sleep $(BROWSER_PAUSE); try=$$((try + 1)); \
	done; \
	echo "could not install chromium: $$(tail -n 1 "$$log")"; rm -f "$$log"; \
	echo "$$then_what"

test: setup lint browser
	$(BIN)/pytest -q

PEERS := benchmarks/.venv-peers

$(PEERS)/.installed:
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet lifetimes==0.11.3 pyarrow
	@touch $@

# each peer comparison and the CLI path: BENCH_RUNS fresh-process runs a side (median, min, max)
BENCH_RUNS ?= 3

bench: setup $(PEERS)/.installed
	$(BIN)/python benchmarks/run.py --runs $(BENCH_RUNS)

clean:
	rm -rf $(VENV) *.duckdb *.duckdb.wal .pytest_cache .mypy_cache .ruff_cache
