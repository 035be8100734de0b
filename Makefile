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

.PHONY: run test test-sqlite test-postgres lint typecheck check-contract bench lock clean

# (Re)install whenever the dependency list or its lock changes: every package at the exact
# version and hash of requirements/dev.txt (pip itself included, so no unpinned pip upgrade),
# then the project without dependencies; pip check catches a lock older than pyproject.toml.
$(STAMP): pyproject.toml requirements/runtime.txt requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check || { echo 'requirements/ is out of date: run make lock' >&2; exit 1; }
	touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(STAMP)
	$(BIN)/claims-realtime serve --host $(HOST) --port $(PORT)

# The whole suite on SQLite, then again on PostgreSQL (a database created for the run) the
# tests that reach that database (tests/conftest.py); the scale-out tests use PostgreSQL and
# Redis in both cases, so they run once.
# Then the realtime integration tests once more on the libraries' stock paths (FAST_PATHS=off,
# docs/protocol.md), so that the fallback is proven too.
FAST_PATHS_OFF_TESTS = $(addprefix tests/integration/,test_delivery.py test_js_client.py \
	test_slow_consumer.py test_socket_fuzz.py test_crash.py test_protocol_conformance.py \
	test_protocol_conformance_socketio.py test_silent_connections.py test_log_secrets.py)
# The SQLite and PostgreSQL passes run side by side (their databases are apart, and much of
# each is waiting on servers and clients); each one's output is shown when it ends.
test: $(STAMP) node_modules/.installed lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres
	FAST_PATHS=off $(BIN)/python -m pytest -m "not scaleout" $(FAST_PATHS_OFF_TESTS) $(PYTEST_ARGS)

# Each pass starts its servers on ports of its own range (tools/bench/servers.free_port).
test-sqlite: $(STAMP) node_modules/.installed
	PORT_RANGE=20000-25999 $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: $(STAMP) node_modules/.installed
	PORT_RANGE=26000-31999 $(BIN)/python -m pytest --database=postgres -m "not scaleout" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The fan-out benchmark (docs/benchmarks.md); e.g. make bench BENCH_ARGS="--mode all".
bench: $(STAMP) node_modules/.installed
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

check-contract: $(STAMP)
	$(BIN)/python -m tools.check_contract

# Regenerate the hashed lock files after editing dependencies in pyproject.toml (README,
# "Dependencies and the lock file"). Current pins that still fit are kept; move one with
# e.g. make lock LOCK_ARGS="--upgrade-package uvicorn". pip-tools comes from the old lock.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock:
	test -x $(BIN)/pip-compile || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt; }
	$(PIP_COMPILE) --output-file=requirements/runtime.txt pyproject.toml
	$(PIP_COMPILE) --extra=dev --constraint=requirements/runtime.txt \
	  --output-file=requirements/dev.txt pyproject.toml

# Re-copy the console's Socket.IO bundle (and licences) from node_modules into console/vendor/
# after a socket.io-client bump in package-lock.json; tests/unit/test_vendored_client.py checks.
.PHONY: vendor
vendor: $(STAMP) node_modules/.installed
	$(BIN)/python -m tools.vendor_console

clean:
	rm -rf $(VENV) node_modules build *.egg-info
