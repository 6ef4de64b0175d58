# Quick start: `make demo` (install + run a demo lesson), `make test` (install + every test).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install install-browser demo serve test lint typecheck bench clean

$(STAMP): pyproject.toml scripts/install-system.sh
	./scripts/install-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# TypeScript, pinned in package-lock.json, into ./node_modules: `tsc --checkJs` over the pages
node_modules/.package-lock.json: package.json package-lock.json $(STAMP)
	npm ci --no-audit --no-fund

install: $(STAMP) node_modules/.package-lock.json

install-browser: $(STAMP)
	CLASSCAST_WITH_BROWSER=1 ./scripts/install-system.sh

demo: install
	$(BIN)/classcast demo

serve: install
	$(BIN)/classcast serve

lint: install
	$(BIN)/ruff check server recorder catalog player tests benchmarks
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

test: install install-browser lint typecheck
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/relay.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
