# One target per chore. Everything runs from a local virtualenv that `make venv` builds.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo test lint format bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create the virtualenv and install reprotrain with exact versions

demo: $(STAMP)  ## run an example job, re-run it, print the verdict
	$(BIN)/python -m examples.demo

test: $(STAMP)  ## lint, then the whole test suite (GPU tests skip without CUDA)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks: print tables, pass/fail nothing
	$(BIN)/python -m bench.start_latency

clean:
	rm -rf runs .pytest_cache .ruff_cache
