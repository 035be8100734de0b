# Two commands matter on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8080

# Optional local configuration (see .env.example): KEY=value lines, exported to the server.
ifneq (,$(wildcard .env))
include .env
export
endif

.PHONY: run test lint typecheck check-contract bench clean

# (Re)install whenever the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# node_modules: the console (/console) serves the npm socket.io-client's browser bundle.
run: $(STAMP) node_modules/.installed
	$(BIN)/claims-realtime serve --host $(HOST) --port $(PORT)

# The whole suite on SQLite, then again on PostgreSQL (a database created for the run); the
# scale-out tests use PostgreSQL and Redis in both cases, so they run once.
test: $(STAMP) node_modules/.installed lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest --database=postgres -m "not scaleout" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The fan-out benchmark (README, Benchmark); e.g. make bench BENCH_ARGS="--mode all".
bench: $(STAMP) node_modules/.installed
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

check-contract: $(STAMP)
	$(BIN)/python -m tools.check_contract

clean:
	rm -rf $(VENV) node_modules build *.egg-info
