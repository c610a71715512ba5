# km2pg: the usual targets. Everything runs from a local virtualenv (.venv) made on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The pinned CDK CLI (package-lock.json), installed by `npm ci`: synth and the infra tests use it.
NODE_STAMP := node_modules/.package-lock.json

.PHONY: help install test unit integration lint format typecheck demo bench bench-queries scale synth deploy settings-table clean

help:
	@echo "make demo       generate a sample export, load it into the embedded PostgreSQL, show insights"
	@echo "make test       the whole test suite (embedded PostgreSQL, or \$$KM2PG_TEST_DSN)"
	@echo "make lint       ruff (lint + format check) and mypy"
	@echo "make format     ruff format and autofix"
	@echo "make bench      load speed as users load (1 file, 10 hourly files, a 40-file backfill; two servers) vs COPY floors"
	@echo "make bench-queries  the insight functions on 10M events (QUERY_ARGS=--quick: seconds)"
	@echo "make scale      scale figures: a 1 GB file, pruning 10M events, 400 files through the loader"
	@echo "make synth      synthesize the CDK app into cdk.out/ (pinned CDK CLI, no AWS credentials)"
	@echo "make deploy     deploy the stack (see README: Deploy to AWS)"
	@echo "make settings-table  rewrite README's settings table from infra/settings.py"
	@echo "make clean      remove the virtualenv and caches"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "km2pg needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

test: install $(NODE_STAMP)
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/ruff check functions tests benchmarks infra layers
	$(BIN)/ruff format --check functions tests benchmarks infra layers
	$(BIN)/mypy
	$(BIN)/mypy infra layers tests/infra benchmarks

format: install
	$(BIN)/ruff check --fix functions tests benchmarks infra layers
	$(BIN)/ruff format functions tests benchmarks infra layers

typecheck: install
	$(BIN)/mypy

demo: install
	$(BIN)/km2pg demo

bench: install
	$(BIN)/python benchmarks/bench_load.py

bench-queries: install
	$(BIN)/python benchmarks/bench_queries.py $(QUERY_ARGS)

# About 7 minutes on 2 cores; SCALE_ARGS=--quick runs the same steps at tiny sizes in seconds.
scale: install
	$(BIN)/python benchmarks/bench_scale.py $(SCALE_ARGS)

# The AWS CDK app (infra/). `npm ci` installs the pinned CDK CLI (package-lock.json).
$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund

synth: install $(NODE_STAMP)
	npx cdk synth --quiet

deploy: install $(NODE_STAMP)
	npx cdk deploy

# README's settings table is generated from the declarations (a test fails when it is stale).
settings-table: install
	$(BIN)/python -m infra.settings_table

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis cdk.out node_modules
