#!/usr/bin/env sh
# Create a test tool's own virtualenv, once: its stamp file records the pins it was built
# from, so a change of pins rebuilds it and nothing else does.
#
#   tests/tool_venv.sh TOOL [VENV_DIR]    (default VENV_DIR: <repo>/.venv-TOOL)
#
# Each tool runs as a separate process from its venv, speaking to the tests over loopback
# sockets as it would to the real service, because its pins cannot share the main venv:
#   bqemulator     the BigQuery emulator: pins an older sqlglot than ours;
#   dbt-snowflake  every 1.11.x pins certifi<2025.4.26, and snowflake-connector-python
#                  4.8.1 (ours) needs certifi>=2026.10.18.
# (dbt-postgres and dbt-bigquery share the main venv: they are in the extras.)
set -eu
TOOL=${1:?usage: tests/tool_venv.sh TOOL [VENV_DIR]}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=${2:-$REPO/.venv-$TOOL}
PYTHON=${PYTHON:-python3}
case "$TOOL" in
    bqemulator) PINS="bqemulator duckdb==1.5.* duckdb-extension-spatial==1.5.5 numpy" ;;
    dbt-snowflake) PINS="dbt-core>=1.11,<1.12 dbt-snowflake>=1.11,<1.12" ;;
    *) echo "tests/tool_venv.sh: unknown tool '$TOOL' (bqemulator, dbt-snowflake)" >&2
       exit 2 ;;
esac
STAMP="$VENV/.tool-venv-ready"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PINS" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    # PINS is word-split on purpose: one requirement per word, none has a space.
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off $PINS
    printf '%s' "$PINS" > "$STAMP"
fi

if [ "$TOOL" = bqemulator ]; then
    # bqemulator runs `INSTALL spatial` at start, a download that fails offline: DuckDB's
    # spatial extension comes from its PyPI wheel and is FORCE INSTALLed from that file.
    # DuckDB keeps extensions per user (~/.duckdb/extensions), not in the venv, so this runs
    # whenever it is missing there.
    "$VENV/bin/python" - <<'PY'
import pathlib

import duckdb
import duckdb_extension_spatial as spatial

installed = duckdb.execute(
    "select installed from duckdb_extensions() where extension_name = 'spatial'"
).fetchone()
if not (installed and installed[0]):
    path = next(pathlib.Path(spatial.__file__).parent.glob("extensions/v*/*.duckdb_extension"))
    duckdb.execute(f"FORCE INSTALL '{path}'")
PY
fi
