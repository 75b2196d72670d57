# Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck docs docs-serve pytest chromium azurite bench bench-azure clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: run a sample orchestration end to end on a local SQLite task hub
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## test: lint, format check, type check, the strict docs build, then the whole test suite
test: lint typecheck docs pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# Material for MkDocs prints a banner about MkDocs 2.0 at every build unless this is set.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

## docs: build the documentation site into site/; any warning (a broken link or reference,
## a public object without a docstring, a missing example file) fails the build
docs: $(STAMP)
	$(BIN)/ruff check docs/examples docs/_tooling
	$(BIN)/ruff format --check docs/examples docs/_tooling
	$(MKDOCS) build --strict

## docs-serve: serve the documentation at http://127.0.0.1:8000, rebuilt on every change
docs-serve: $(STAMP)
	$(MKDOCS) serve

# The sidecar is also tried with an older release of Microsoft's Python SDK (an older
# protocol), which cannot share the main environment with the newest: it gets its own.
OLDER_SDK_VENV := .venv-sdk-1.9
OLDER_SDK_STAMP := $(OLDER_SDK_VENV)/.installed
$(OLDER_SDK_STAMP):
	$(PYTHON) -m venv $(OLDER_SDK_VENV)
	$(OLDER_SDK_VENV)/bin/python -m pip install --quiet 'durabletask==1.9.*'
	touch $(OLDER_SDK_STAMP)

pytest: $(STAMP) chromium azurite $(OLDER_SDK_STAMP)
	DURATASK_TEST_OLDER_SDK_PYTHON="$${DURATASK_TEST_OLDER_SDK_PYTHON:-$(CURDIR)/$(OLDER_SDK_VENV)/bin/python}" \
	  $(BIN)/pytest $(PYTEST_ARGS)

# The Azure Storage store's tests run on Azurite, the storage emulator (an npm package),
# installed into .azurite/ when missing; without npm the tests are skipped (CI fails them).
AZURITE_VERSION := 3.37.0
azurite: .azurite/node_modules/.bin/azurite

.azurite/node_modules/.bin/azurite:
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p .azurite && npm install --silent --no-audit --no-fund --prefix .azurite \
	    azurite@$(AZURITE_VERSION); \
	else \
	  echo "WARNING: npm is not installed; the Azure store's tests will be skipped" \
	       "(apt-get install npm, then make azurite)"; \
	fi

# The dashboard's browser test drives Debian's Chromium: install it when missing (as root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "WARNING: chromium is not installed and cannot be installed here;" \
	         "the browser test will be skipped (apt-get install chromium)"; \
	  fi; }

## bench: run the benchmarks (benchmarks/README.md); quick run: make bench BENCH_ARGS="--scale 0.1 --repeat 1"
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

## bench-azure: W1 on an Azure Storage hub on Azurite, beside Azurite's raw insert limit
bench-azure: $(STAMP) azurite
	$(BIN)/python -m benchmarks.azure_storage $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix src tests examples benchmarks docs/examples docs/_tooling
	$(BIN)/ruff format src tests examples benchmarks docs/examples docs/_tooling

clean:
	rm -rf $(VENV) $(OLDER_SDK_VENV) .mypy_cache .ruff_cache .pytest_cache site .azurite
