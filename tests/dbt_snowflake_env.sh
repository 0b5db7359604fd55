#!/usr/bin/env sh
# Create dbt-snowflake's own virtualenv, once: a stamp file marks it done.
#
#   tests/dbt_snowflake_env.sh [VENV_DIR]    (default: <repo>/.venv-dbt-snowflake)
#
# Every dbt-snowflake 1.11.x pins certifi<2025.4.26, and snowflake-connector-python 4.8.1
# (the main venv's) needs certifi>=2026.10.18: in one venv pip would take the connector back
# to 4.8.0. So dbt runs from its own venv, as a separate process speaking to the tests'
# fakesnow server over HTTP, as it would to Snowflake.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=${1:-$REPO/.venv-dbt-snowflake}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.dbt-snowflake-ready"
if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        'dbt-core>=1.11,<1.12' 'dbt-snowflake>=1.11,<1.12'
    touch "$STAMP"
fi
