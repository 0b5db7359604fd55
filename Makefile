# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export DO_NOT_TRACK := 1
export DAGSTER_HOME := $(CURDIR)/.dagster

.PHONY: demo test lint dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## run the whole pipeline on the embedded default (DuckDB + sandbox providers)
	$(BIN)/mailers demo

# The BigQuery emulator's own venv (it pins an older sqlglot than ours): built once, ~1.5 min.
BQEMULATOR := .venv-bqemulator/.bqemulator-ready
$(BQEMULATOR): tests/bqemulator_env.sh
	sh tests/bqemulator_env.sh .venv-bqemulator

# dbt-snowflake's own venv (its certifi pin would take the main venv's connector back a
# release): the tests run it as a separate process against fakesnow's server, ~1 min once.
DBT_SNOWFLAKE := .venv-dbt-snowflake/.dbt-snowflake-ready
$(DBT_SNOWFLAKE): tests/dbt_snowflake_env.sh
	sh tests/dbt_snowflake_env.sh .venv-dbt-snowflake

test: $(STAMP) $(BQEMULATOR) $(DBT_SNOWFLAKE) lint  ## lint, type-check and run the test suite
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

dev: $(STAMP)  ## provider simulator + webhook receiver + Dagster UI on http://127.0.0.1:3000
	$(BIN)/mailers dev

clean:
	rm -rf .mailers dbt_project/target dbt_project/logs
