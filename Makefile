# One target per chore. Everything runs from a local virtualenv that `make venv` builds.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: venv demo demo-ui browser-deps test lint imports format bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create the virtualenv and install reprotrain with exact versions

demo: $(STAMP)  ## run an example job, re-run it, print the verdict
	$(BIN)/python -m reprotrain.examples.demo

demo-ui: $(STAMP)  ## the demo, then the service stays up: open the web UI it prints (Ctrl-C stops)
	$(BIN)/python -m reprotrain.examples.demo --keep

browser-deps:  ## Debian's chromium for the browser tests (tests/browser); needs root and apt
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP)  ## lint, import contracts, then the whole test suite (GPU tests skip without CUDA)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# import-linter walks package folders; service/ and worker/ are mapped into reprotrain (package-dir),
# so it reads an installed copy of the current tree, laid out as the wheel lays it out.
IMPORT_VIEW := build/import-view
imports: $(STAMP)  ## the import contracts of pyproject.toml (docs/architecture.md, "Rules")
	rm -rf $(IMPORT_VIEW) build/lib  # build/lib: pip builds in-tree; a stale module there would ship
	mkdir -p build
	$(BIN)/pip install -q --no-deps --no-compile --target $(IMPORT_VIEW) . > $(IMPORT_VIEW).log 2>&1 \
		|| (cat $(IMPORT_VIEW).log; exit 1)
	cd $(IMPORT_VIEW) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks: print tables, pass/fail nothing
	$(BIN)/python -m bench.start_latency
	$(BIN)/python -m bench.checkpoints
	$(BIN)/python -m bench.resume
	$(BIN)/python -m bench.integrity
	$(BIN)/python -m bench.tracking
	$(BIN)/python -m bench.ui
	$(BIN)/python -m bench.service --db sqlite
	$(BIN)/python -m bench.service --db postgres

clean:
	rm -rf runs .pytest_cache .ruff_cache build/import-view build/import-view.log build/lib

# --- deployment (Dockerfile, docker-compose.yml; docs/self-hosting.md) -------------------------
# The deploy tools live in their own virtualenv (hash-pinned), not in the project's.
DEPLOY_TOOLS ?= build/deploy-tools
TOOLS_STAMP  := $(DEPLOY_TOOLS)/.installed
PIP_COMPILE  := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(DEPLOY_TOOLS)/bin/pip-compile -q \
	--generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --index-url https://pypi.org/simple

.PHONY: deploy-tools deploy-check image-lock images vendor-web

$(TOOLS_STAMP): deploy/requirements-tools.lock
	test -x $(DEPLOY_TOOLS)/bin/python || $(PY) -m venv $(DEPLOY_TOOLS)
	$(DEPLOY_TOOLS)/bin/pip install -q --require-hashes -r deploy/requirements-tools.lock
	touch $(TOOLS_STAMP)

deploy-tools: $(TOOLS_STAMP)  ## hadolint and pip-tools, in their own virtualenv

deploy-check: $(TOOLS_STAMP)  ## lint the Dockerfile, validate docker-compose.yml (no Docker engine needed)
	$(DEPLOY_TOOLS)/bin/hadolint Dockerfile
	deploy/check-compose.sh

image-lock: $(TOOLS_STAMP)  ## regenerate the hashed image locks from requirements.lock (needs PyPI)
	$(PIP_COMPILE) -o requirements-image.lock deploy/requirements-image.in
	$(PIP_COMPILE) -o requirements-worker.lock deploy/requirements-worker.in
	$(PIP_COMPILE) -o deploy/requirements-build.lock deploy/requirements-build.in

vendor-web:  ## re-vendor the web assets /docs and /redoc load (needs npm; versions in the script)
	deploy/vendor-web.sh

images:  ## build both images with reproducible build facts (needs Docker with BuildKit)
	docker build --target api -t reprotrain-api:local .
	docker build --target worker -t reprotrain-worker:local \
		--build-arg VCS_REF=$$(git rev-parse HEAD) \
		--build-arg SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) .
