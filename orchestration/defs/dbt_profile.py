"""What dbt is told about the configured warehouse: the profile target, the variables
``dbt_project/profiles.yml`` and ``dbt_project.yml`` read, and the dbt executable to run.

Every value comes from Mailers' config, so dbt builds where Mailers writes; secrets are
passed by the *name* of the variable that holds them, never by value.
"""

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mailers.bigquery_config import BigQueryWarehouseConfig
from mailers.config import DuckDBWarehouseConfig, PostgresWarehouseConfig, Settings
from mailers.snowflake_config import SnowflakeWarehouseConfig

DUCKDB_PATH_ENV = "MAILERS_DUCKDB_PATH"
"""How ``dbt_project/profiles.yml`` learns where the warehouse file is."""

POSTGRES_PASSWORD_ENV_ENV = "MAILERS_POSTGRES_PASSWORD_ENV"
"""Names the variable the ``postgres`` target reads its password from (the config's
``warehouse.password``), so the secret stays in the one variable that holds it."""

SCHEMA_PREFIX_ENV = "MAILERS_DBT_SCHEMA_PREFIX"
SCHEMA_NAMES_ENV = "MAILERS_DBT_SCHEMAS"
"""A config's renaming of schemas, which dbt applies to the schemas it builds and reads:
the prefix of every schema's name, and a JSON object of schema -> name overriding it."""

ENFORCE_CONTRACTS_ENV = "MAILERS_DBT_ENFORCE_CONTRACTS"
"""``false`` builds the marts without enforcing their contracts (``dbt_project.yml``)."""

EMULATOR_TOKEN = "bigquery-emulator-checks-no-token"
"""dbt-bigquery's access token on an emulator config: a placeholder, not a credential."""

DBT_EXECUTABLE_ENV = "MAILERS_DBT_EXECUTABLE"
"""Names the dbt executable Mailers runs, when it is not the one in Mailers' venv."""

DBT_TARGETS = {
    "duckdb": "duckdb",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "postgres": "postgres",
}
"""The ``dbt_project/profiles.yml`` target of each warehouse kind."""


def dbt_executable() -> str:
    """The dbt to run: the one ``MAILERS_DBT_EXECUTABLE`` names (a dbt whose adapter cannot
    share Mailers' venv, such as dbt-snowflake's), else the dbt beside this Python (the
    project's venv), so no PATH setup is needed."""
    named = os.environ.get(DBT_EXECUTABLE_ENV)
    if named:
        return named
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else shutil.which("dbt") or "dbt"


def dbt_target(settings: Settings) -> str:
    """The profile target for the configured warehouse: dbt builds where Mailers writes."""
    kind = settings.config.warehouse.kind
    try:
        return DBT_TARGETS[kind]
    except KeyError:
        raise ValueError(
            f"warehouse.kind {kind!r} has no target in dbt_project/profiles.yml "
            f"(known: {', '.join(DBT_TARGETS)})"
        ) from None


def dbt_environment(settings: Settings) -> dict[str, str]:
    """The variables ``dbt_project/profiles.yml`` reads for the configured warehouse, from
    its config: a DuckDB file's path; a Postgres server's host, port, database and user
    and the *name* of the variable holding its password (never the password itself); a
    BigQuery project, location, endpoint and renaming of schemas to datasets
    (``dataset_prefix``, ``datasets``).

    A BigQuery emulator config (``anonymous``) also gets a placeholder access token (the
    emulator checks none, and dbt never refreshes one it was given) and contracts off: the
    emulator cannot parse dbt's contract-enforced ``create table (columns) as select``.

    A Snowflake config gives its account, user, database, role, virtual warehouse and
    endpoint, and the *names* of the variables holding its password or private key and
    passphrase (a key file by its path).

    A Postgres config given as ``dsn`` sets nothing (dbt-postgres takes no connection
    string): export the target's variables yourself. BigQuery's credentials are the
    environment's (Application Default Credentials, ``MAILERS_BIGQUERY_METHOD``).
    """
    config = settings.config.warehouse
    if isinstance(config, DuckDBWarehouseConfig):
        return {DUCKDB_PATH_ENV: str(settings.warehouse_path)}
    if isinstance(config, PostgresWarehouseConfig) and config.dsn is None:
        values = {
            "MAILERS_POSTGRES_HOST": str(config.host),
            "MAILERS_POSTGRES_PORT": str(config.port),
            "MAILERS_POSTGRES_DBNAME": str(config.database),
            "MAILERS_POSTGRES_USER": str(config.user),
        }
        if config.password is not None:
            values[POSTGRES_PASSWORD_ENV_ENV] = config.password.env
        return values
    if isinstance(config, BigQueryWarehouseConfig):
        return _bigquery_environment(config)
    if isinstance(config, SnowflakeWarehouseConfig):
        return _snowflake_environment(config)
    return {}


def _snowflake_environment(config: SnowflakeWarehouseConfig) -> dict[str, str]:
    values = {
        "MAILERS_SNOWFLAKE_ACCOUNT": config.account,
        "MAILERS_SNOWFLAKE_USER": config.user,
        "MAILERS_SNOWFLAKE_DATABASE": config.database,
    }
    if config.role is not None:
        values["MAILERS_SNOWFLAKE_ROLE"] = config.role
    if config.warehouse is not None:
        values["MAILERS_SNOWFLAKE_WAREHOUSE"] = config.warehouse
    if config.host is not None:
        values |= {
            "MAILERS_SNOWFLAKE_HOST": config.host,
            "MAILERS_SNOWFLAKE_PORT": str(config.port),
            "MAILERS_SNOWFLAKE_PROTOCOL": config.protocol,
        }
    if config.private_key_file is not None:
        values["MAILERS_SNOWFLAKE_PRIVATE_KEY_PATH"] = config.private_key_file
    # Secrets by the name of the variable that holds them, never their value.
    for name, secret in (
        ("PASSWORD", config.password),
        ("PRIVATE_KEY", config.private_key),
        ("PRIVATE_KEY_PASSPHRASE", config.private_key_passphrase),
    ):
        if secret is not None:
            values[f"MAILERS_SNOWFLAKE_{name}_ENV"] = secret.env
    return values


def _bigquery_environment(config: BigQueryWarehouseConfig) -> dict[str, str]:
    values = {
        "MAILERS_BIGQUERY_PROJECT": config.project,
        "MAILERS_BIGQUERY_LOCATION": config.location,
    }
    if config.api_endpoint is not None:
        values["MAILERS_BIGQUERY_API_ENDPOINT"] = config.api_endpoint
    # dbt builds and reads the datasets Mailers does (macros/generate_schema_name.sql).
    if config.dataset_prefix:
        values[SCHEMA_PREFIX_ENV] = config.dataset_prefix
    if config.datasets:
        values[SCHEMA_NAMES_ENV] = json.dumps(config.datasets, sort_keys=True)
    if config.anonymous:
        values |= {
            "MAILERS_BIGQUERY_METHOD": "oauth-secrets",
            "MAILERS_BIGQUERY_TOKEN": EMULATOR_TOKEN,
            ENFORCE_CONTRACTS_ENV: "false",
        }
    return values


@contextmanager
def dbt_pointed_at(settings: Settings) -> Iterator[None]:
    """Within the block, this process's environment tells dbt's profile where the configured
    warehouse is (:func:`dbt_environment`), for the dbt subprocesses started in it, which
    take a copy of the environment as they start; after it, every variable is as it was, so
    one config's values never reach a later run on another config in the same process."""
    values = dbt_environment(settings)
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
