"""SMTP account settings, credential keys and default ports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.providers.network import is_loopback

KIND = "smtp"
MAX_BATCH_SIZE = 100
"""Messages per ``send_batch``: SMTP has no per-call limit (each message is its own
transaction); this bounds how much one batch holds and how often results are returned."""

USERNAME = "username"
PASSWORD = "password"
"""Credential keys (``credentials:``, env var references only): both, for AUTH (RFC 4954),
or neither."""

DEFAULT_PORTS: dict[str, int] = {
    # RFC 6409 §3.1: message submission on 587, upgraded with STARTTLS (RFC 3207).
    "starttls": 587,
    # RFC 8314 §3.3: submission over implicit TLS on 465.
    "tls": 465,
    # RFC 5321 §4.5.4.2: plain SMTP on 25 (loopback relays only, see SmtpSettings).
    "none": 25,
}
"""Port used when ``port`` is not set, by ``security``."""


class SmtpSettings(BaseModel):
    """Settings of an SMTP account (``settings:`` in the config); secrets are credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, description="SMTP relay or submission server.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default: 587, 465 or 25 by `security`."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="STARTTLS (RFC 3207), implicit TLS (RFC 8314), or none (loopback only).",
    )
    pool_size: int = Field(
        default=2, ge=1, le=32, description="Persistent connections, used in parallel."
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and per-reply timeout (also after DATA)."
    )
    helo_name: str | None = Field(
        default=None, min_length=1, description="Name given in EHLO; default: this host's FQDN."
    )
    verify_certificates: bool = Field(
        default=True, description="Verify the server's TLS certificate and host name."
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file of the CAs to trust instead of the system store.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SmtpSettings:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                "security 'none' sends mail and credentials in clear text and is only "
                f"allowed for a loopback host, not {self.host!r}; use 'starttls' or 'tls'"
            )
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file needs security 'starttls' or 'tls'")
        if self.ca_file is not None and not self.verify_certificates:
            raise ValueError("ca_file is not used when verify_certificates is false")
        return self

    @property
    def resolved_port(self) -> int:
        """The port to connect to: ``port``, or the default of ``security``."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]

    @property
    def server(self) -> str:
        """``host:port``, as errors and logs name the server."""
        return f"{self.host}:{self.resolved_port}"
