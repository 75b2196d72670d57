# Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest chromium bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: run a sample orchestration end to end on a local SQLite task hub
demo: $(STAMP)
	$(BIN)/python examples/demo.py

## test: lint, format check, type check, then the whole test suite
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) chromium
	$(BIN)/pytest $(PYTEST_ARGS)

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

format: $(STAMP)
	$(BIN)/ruff check --fix src tests examples benchmarks
	$(BIN)/ruff format src tests examples benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
