#!/usr/bin/env sh
# Create dbt-bigquery's own virtualenv, once: a stamp file marks it done.
#
#   tests/dbt_bigquery_env.sh [VENV_DIR]    (default: <repo>/.venv-dbt-bigquery)
#
# dbt-bigquery brings google-cloud-aiplatform, dataproc and pandas (and pins of its own),
# which the main venv need not carry: dbt runs from its own venv, as a separate process
# speaking to the tests' bqemulator over HTTP, as it would to BigQuery.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
VENV=${1:-$REPO/.venv-dbt-bigquery}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.dbt-bigquery-ready"
if [ ! -f "$STAMP" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        'dbt-core>=1.11,<1.12' 'dbt-bigquery>=1.11,<1.12'
    touch "$STAMP"
fi
