#!/usr/bin/env sh
# Create the BigQuery emulator's own virtualenv (bqemulator pins an older sqlglot than the
# main venv, so it runs there as a separate process), once: a stamp file marks it done.
#
#   tests/bqemulator_env.sh [VENV_DIR]    (default: <repo>/.venv-bqemulator)
#
# The recipe that works offline (only the package registry reachable): bqemulator runs
# `INSTALL spatial` at start (a download), so DuckDB's spatial extension comes from its PyPI
# wheel and is FORCE INSTALLed from that file. DuckDB keeps extensions per user
# (~/.duckdb/extensions), not in the venv, so that step runs whenever it is missing there.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=${1:-$REPO/.venv-bqemulator}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.bqemulator-ready"
if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        bqemulator 'duckdb==1.5.*' 'duckdb-extension-spatial==1.5.5' numpy
    touch "$STAMP"
fi
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
