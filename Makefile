# make demo | make test | make chaos | make bench: each makes .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/genq run batches/examples/catalog.csv --sandbox
	$(BIN)/genq run batches/examples/sprites.yaml --sandbox
	$(BIN)/genq run batches/examples/mixed.jsonl --sandbox
	$(BIN)/genq status
	@echo "The images are in $(CURDIR)/var/objects (one folder per batch, with manifest.jsonl and manifest.csv)."

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache
