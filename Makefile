# make demo | make test | make chaos | make bench: each makes .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER := tests/browser
BROWSER_STAMP := $(BROWSER)/node_modules/.installed

.PHONY: demo test chaos bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Phaser for the browser tests, pinned in tests/browser/package.json; without npm the browser tests
# skip and say what to install (under CI they fail instead).
$(BROWSER_STAMP): $(BROWSER)/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix $(BROWSER) --no-audit --no-fund --loglevel=error && touch $(BROWSER_STAMP); \
	else echo "npm not found: the browser tests will be skipped (apt-get install npm)"; fi

demo: $(STAMP)
	$(BIN)/genq run batches/examples/catalog.csv --sandbox
	$(BIN)/genq run batches/examples/sprites.yaml --sandbox
	$(BIN)/genq run batches/examples/mixed.jsonl --sandbox
	$(BIN)/genq status
	@echo "Each batch has a folder in $(CURDIR)/var/objects: its pictures by name, results.jsonl, results.csv,"
	@echo "errors.csv, report.html (open it in a browser) and, for sprites, sheets/ with atlases for Phaser, PixiJS and Godot."

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache
