"""The Amazon SES provider (API v2): raw MIME sends, SNS-signed event webhooks, SQS polling.

==============  ==================================================================
module          job
==============  ==================================================================
``settings``    :class:`SesSettings`, credential keys and their resolution, limits
``redaction``   the log filter that masks the account's credentials
``client``      boto3 ``sesv2``/``sqs`` clients and how AWS words its errors
``sending``     ``SendEmail`` with our own MIME, one message per call
``events``      SES event records (bare or in their SNS envelope) → canonical events
``sns``         the SNS message format, signing certificates and signatures
``webhooks``    SNS message verification, subscription confirmation
``polling``     SQS ``ReceiveMessage``, deleting on the next poll
``quota``       ``GetSendQuota``: the account's sending rate and 24-hour quota
==============  ==================================================================

Events reach Mailers in two ways, both landing the SNS message as-is: an HTTPS
subscription of the webhook receiver to the events topic (:func:`verify_webhook`), or an
SQS queue subscribed to it (:func:`poll_events`, ``events_queue_url``).

Only sending, polling and the quota need boto3: :func:`build`, :func:`poll_events` and
:func:`read_quota` import their modules when called (without the AWS SDK installed, a
``ConfigError`` names the extra to install), so this package, :func:`parse` and
:func:`verify_webhook` never import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from adapters.bulk_events import provider_mapping
from adapters.providers.ses.events import parse
from adapters.providers.ses.settings import (
    ACCESS_KEY_ID,
    CREDENTIAL_KEYS,
    KIND,
    MAX_BATCH_SIZE,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    SesSettings,
    resolve_credentials,
)
from adapters.providers.ses.webhooks import verify_webhook
from adapters.providers.spec import Credentials, ProviderSpec
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.pacing import ProviderQuota

if TYPE_CHECKING:
    from adapters.providers.ses.sending import SesProvider

__all__ = [
    "ACCESS_KEY_ID",
    "KIND",
    "MAX_BATCH_SIZE",
    "SECRET_ACCESS_KEY",
    "SESSION_TOKEN",
    "SPEC",
    "SesSettings",
    "build",
    "parse",
    "poll_events",
    "read_quota",
    "resolve_credentials",
    "verify_webhook",
]

MISSING_SDK = (
    f"provider kind {KIND!r} needs an optional dependency: boto3 (pip install 'mailers[ses]')"
)


@contextmanager
def _needing_the_sdk() -> Iterator[None]:
    """Turn boto3 (or its botocore) missing into the ConfigError naming the extra; any other
    import error is a bug of ours and stays what it is."""
    try:
        yield
    except ImportError as err:
        if (err.name or "").split(".")[0] not in ("boto3", "botocore"):
            raise
        raise ConfigError(MISSING_SDK) from err


def build(
    account: str, config: ProviderAccountConfig, settings: SesSettings, app: Settings
) -> SesProvider:
    """An SES account with one pooled ``sesv2`` client (:func:`.sending.build`)."""
    with _needing_the_sdk():
        from adapters.providers.ses import sending
    return sending.build(account, config, settings, app)


def poll_events(
    account: str, config: ProviderAccountConfig, settings: SesSettings, cursor: str | None
) -> tuple[list[bytes], str | None]:
    """New SES event messages from the account's SQS queue (:func:`.polling.poll_events`)."""
    with _needing_the_sdk():
        from adapters.providers.ses import polling
    return polling.poll_events(account, config, settings, cursor)


def read_quota(account: str, config: ProviderAccountConfig, settings: SesSettings) -> ProviderQuota:
    """The account's sending quota from ``GetSendQuota`` (:func:`.quota.read_quota`)."""
    with _needing_the_sdk():
        from adapters.providers.ses import quota
    return quota.read_quota(account, config, settings)


SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=SesSettings,
    credentials=Credentials(optional=CREDENTIAL_KEYS),
    build=build,
    parse=parse,
    verify_webhook=verify_webhook,
    poll=poll_events,
    quota=read_quota,
    events_sql=provider_mapping(__name__),
)
