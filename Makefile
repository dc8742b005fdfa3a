# CryptoFlow: every entry point a person or CI needs. `make demo` and `make test` work on a fresh machine:
# they create .venv, install the pinned versions (constraints.txt) and whatever system package they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install system-deps demo test soak bench chaos sim stream doctor clean lock

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP)

# Debian packages the tests use: Chromium for the real-browser UI test, PostgreSQL for the scale-out tests (they start a
# throwaway cluster themselves). Installed only when missing (needs root, as on CI).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v initdb >/dev/null 2>&1 || test -x /usr/lib/postgresql/15/bin/initdb || { \
	  echo "installing Debian postgresql for the scale-out tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

demo: install
	$(BIN)/cryptoflow demo

test: install system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Soaks (not part of `make test`): the 20-day backfill at 4 runs at a time while streaming (tests marked `soak`).
soak: install system-deps
	$(BIN)/python -m pytest -m soak $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): BENCH_ARGS="--quick" for the few-minutes size, "--only sidecar_ingest" for one.
bench: install
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The hour at every market (issue 17): ENDURANCE_ARGS="--minutes 4 --sample-minutes 1" for a smoke run; docs/endurance.md.
endurance: install
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.endurance $(ENDURANCE_ARGS)

# The long chaos run (not part of `make test`, which runs a 30 s version): CHAOS_ARGS="--duration 1200" to change it.
chaos: install
	$(BIN)/python -m chaos --report data/chaos-report.json $(CHAOS_ARGS)

sim: install
	$(BIN)/cryptoflow sim

stream: install
	$(BIN)/cryptoflow stream

doctor: install
	$(BIN)/cryptoflow doctor

# Regenerate constraints.txt from the current .venv after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^cryptoflow' > constraints.txt

clean:
	rm -rf data/ dbt_project/target dbt_project/logs .pytest_cache
