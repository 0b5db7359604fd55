"""Configuration of a Snowflake warehouse (``warehouse: {kind: snowflake, ...}``).

One member of :data:`mailers.config.WarehouseConfig`; the adapter is
:mod:`adapters.warehouses.snowflake`. Secrets are :class:`~mailers.secrets.SecretRef`\\ s
(``{env: NAME}``), read when a connection is opened, never when the config loads. Exactly
one way to authenticate:

* ``password``: a password (service users should prefer a key pair);
* ``private_key``: a PEM private key held in an environment variable;
* ``private_key_file``: the path of a PEM private key file (the path is not a secret);

with ``private_key_passphrase`` when the key is encrypted.
See https://docs.snowflake.com/en/user-guide/key-pair-auth.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailers.errors import ConfigError
from mailers.secrets import SecretRef

_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]*$"


class SnowflakeWarehouseConfig(BaseModel):
    """A Snowflake account, database and (for the session's scratch objects) schema."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["snowflake"]
    account: str = Field(min_length=1, description="Account identifier, e.g. myorg-myaccount.")
    user: str = Field(min_length=1)
    role: str | None = Field(default=None, pattern=_IDENTIFIER)
    warehouse: str | None = Field(
        default=None, pattern=_IDENTIFIER, description="Virtual warehouse that runs queries."
    )
    database: str = Field(pattern=_IDENTIFIER)
    session_schema: str = Field(
        default="PUBLIC",
        alias="schema",
        pattern=_IDENTIFIER,
        description="The session's current schema: where its temporary stage lives. Mailers' "
        "own tables are in schemas mailers and mailers_work of the database.",
    )
    password: SecretRef | None = None
    private_key: SecretRef | None = Field(default=None, description="PEM key, as {env: NAME}.")
    private_key_file: str | None = Field(default=None, description="Path of a PEM key file.")
    private_key_passphrase: SecretRef | None = None
    login_timeout_seconds: int = Field(default=60, gt=0)
    network_timeout_seconds: int | None = Field(
        default=None,
        gt=0,
        description="The connector's network_timeout: how long a failing request (HTTP 5xx, "
        "a dropped connection) is retried before it fails with an error naming the "
        "warehouse, and how long a statement may run before the connector cancels it; set "
        "it above the longest statement a run makes. Unset, neither is bounded.",
    )
    query_tag: str = Field(default="mailers", max_length=2000)
    host: str | None = Field(
        default=None,
        min_length=1,
        description="Only to reach Snowflake through another endpoint (a proxy, or a local "
        "fake): unset, the connector derives the host from the account.",
    )
    port: int = Field(default=443, gt=0, lt=65536, description="The endpoint's port.")
    protocol: Literal["https", "http"] = Field(
        default="https", description="http only for a local fake on a loopback port."
    )

    @model_validator(mode="after")
    def _one_authentication(self) -> SnowflakeWarehouseConfig:
        given = [
            name
            for name in ("password", "private_key", "private_key_file")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of password, private_key or private_key_file "
                f"(given: {given or 'none'})"
            )
        if self.private_key_passphrase is not None and self.password is not None:
            raise ValueError("private_key_passphrase goes with private_key or private_key_file")
        if self.host is None and (self.port != 443 or self.protocol != "https"):
            raise ValueError("port and protocol go with host (an endpoint of your choosing)")
        return self

    def connect_arguments(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``snowflake.connector.connect``, secrets resolved now.

        Raises :class:`~mailers.errors.SecretMissing` naming an unset variable and
        :class:`~mailers.errors.ConfigError` for a key that cannot be read (never its bytes).
        """
        arguments: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "database": self.database,
            "schema": self.session_schema,
            "login_timeout": self.login_timeout_seconds,
            "application": "mailers",
        }
        if self.role is not None:
            arguments["role"] = self.role
        if self.warehouse is not None:
            arguments["warehouse"] = self.warehouse
        if self.host is not None:
            arguments |= {"host": self.host, "port": self.port, "protocol": self.protocol}
        if self.network_timeout_seconds is not None:
            arguments["network_timeout"] = self.network_timeout_seconds
        if self.password is not None:
            arguments["password"] = self.password.resolve("warehouse.password", environ)
            return arguments
        arguments["authenticator"] = "SNOWFLAKE_JWT"
        arguments["private_key"] = self._private_key_der(environ)
        return arguments

    def _private_key_der(self, environ: Mapping[str, str] | None) -> bytes:
        """The private key as unencrypted PKCS#8 DER, the form the connector takes."""
        from cryptography.hazmat.primitives import serialization

        if self.private_key is not None:
            where = "warehouse.private_key"
            pem = self.private_key.resolve(where, environ).encode()
        else:
            where = f"warehouse.private_key_file ({self.private_key_file})"
            try:
                pem = Path(str(self.private_key_file)).expanduser().read_bytes()
            except OSError as err:
                raise ConfigError(f"cannot read {where}: {err.strerror}") from err
        passphrase = (
            None
            if self.private_key_passphrase is None
            else self.private_key_passphrase.resolve("warehouse.private_key_passphrase", environ)
        )
        try:
            key = serialization.load_pem_private_key(
                pem, password=None if passphrase is None else passphrase.encode()
            )
        except (ValueError, TypeError) as err:
            # The message says what is wrong (not PEM, wrong or missing passphrase), never
            # the key itself.
            raise ConfigError(f"{where} is not a usable PEM private key: {err}") from err
        return key.private_bytes(
            encoding=serialization.Encoding.DER,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def describe(self) -> str:
        """The warehouse, for messages (never a secret)."""
        return f"Snowflake {self.account}/{self.database} as {self.user}"
