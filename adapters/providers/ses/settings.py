"""SES account settings, credential keys and how the access key is resolved."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from mailers.config import ProviderAccountConfig
from mailers.errors import ConfigError

KIND = "ses"
MAX_BATCH_SIZE = 1
"""``SendEmail`` takes one message (up to 50 recipients; Mailers sends one):
https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html"""

ACCESS_KEY_ID = "access_key_id"
"""Credential key of the access key id (given together with the secret access key)."""
SECRET_ACCESS_KEY = "secret_access_key"
"""Credential key of the secret access key."""
SESSION_TOKEN = "session_token"
"""Credential key of the session token of temporary keys (optional)."""
CREDENTIAL_KEYS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN)
"""Every credential key an SES account reads; without any, boto3's default credential
chain (instance profile, task role, environment) is used."""


class SesSettings(BaseModel):
    """Settings of an SES account (``settings:`` in the config); access keys are credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", description="e.g. eu-west-1.")
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Override the AWS endpoint (VPC endpoints, moto); applies to SES and SQS.",
    )
    configuration_set: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Configuration set whose event destination publishes to SNS. Needed "
        "for events unless the sending identity has a default configuration set.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Read timeout per call.")
    events_queue_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="SQS queue subscribed to the events topic, for poll_events.",
    )
    events_wait_seconds: int = Field(
        default=1, ge=0, le=20, description="ReceiveMessage long-poll wait (short)."
    )
    events_visibility_timeout: int = Field(
        default=900,
        ge=0,
        le=43200,
        description="Seconds received messages stay hidden; they are deleted at the next "
        "poll, so make this longer than the polling interval.",
    )
    events_max_messages: int = Field(
        default=100, ge=1, le=1000, description="Messages read per poll (10 per call)."
    )
    events_topic_arns: list[str] = Field(
        default_factory=list,
        description="When set, webhooks from any other SNS topic are refused. Only these "
        "topics' subscription confirmations are confirmed (none while the list is empty).",
    )


@dataclass(frozen=True)
class AwsCredentials:
    """An access key (and session token) resolved from the account's credential refs."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def values(self) -> list[str]:
        """Every secret value, for log redaction."""
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


def resolve_credentials(account: str, config: ProviderAccountConfig) -> AwsCredentials | None:
    """The account's access key from ``credentials`` (``access_key_id``,
    ``secret_access_key``, optional ``session_token``), or ``None`` when neither key is
    configured: boto3's default chain (instance profile, task role, env) is used then."""
    refs = config.credentials
    unknown = sorted(set(refs) - set(CREDENTIAL_KEYS))
    if unknown:
        raise ConfigError(f"SES account {account!r}: unknown credential keys {unknown}")
    if not refs:
        return None
    if ACCESS_KEY_ID not in refs or SECRET_ACCESS_KEY not in refs:
        raise ConfigError(
            f"SES account {account!r}: give both credentials {ACCESS_KEY_ID} and "
            f"{SECRET_ACCESS_KEY} (or neither, to use the default AWS credential chain)"
        )

    def value(key: str) -> str:
        return refs[key].resolve(f"SES account {account!r} credential {key!r}")

    token = value(SESSION_TOKEN) if SESSION_TOKEN in refs else None
    return AwsCredentials(value(ACCESS_KEY_ID), value(SECRET_ACCESS_KEY), token)
