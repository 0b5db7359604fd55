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

# The test tools' own venvs (tests/tool_venv.sh says why each cannot share ours): bqemulator,
# and dbt-snowflake, which the tests run against fakesnow's server. Built once (about
# 3 minutes for the two); a change of pins rebuilds one.
TOOLS := bqemulator dbt-snowflake
TOOL_VENVS := $(foreach tool,$(TOOLS),.venv-$(tool)/.tool-venv-ready)
.venv-%/.tool-venv-ready: tests/tool_venv.sh
	sh tests/tool_venv.sh $* .venv-$*

test: $(STAMP) $(TOOL_VENVS) lint  ## lint, type-check and run the test suite
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

dev: $(STAMP)  ## provider simulator + webhook receiver + Dagster UI on http://127.0.0.1:3000
	$(BIN)/mailers dev

clean:
	rm -rf .mailers dbt_project/target dbt_project/logs
