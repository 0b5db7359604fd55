"""The Mailgun provider: a call per message, signed webhooks, the events API.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`MailgunSettings`, credential keys, limits
``api``        the account's HTTP client, its ``/v3/{domain}`` paths, error text
``sending``    ``POST /v3/{domain}/messages``, one message per call
``events``     event names, failure reasons and severities → canonical events
``webhooks``   HMAC signature, freshness and replay refusal
``polling``    ``GET /v3/{domain}/events``, following ``paging.next`` from a cursor
``lookup``     ``accepted`` events by our message key, for reconciliation
=============  ===================================================================
"""

from __future__ import annotations

from adapters.bulk_events import provider_mapping
from adapters.providers.mailgun.events import parse
from adapters.providers.mailgun.lookup import MailgunLookup
from adapters.providers.mailgun.polling import backfill_events, poll_events
from adapters.providers.mailgun.sending import MailgunProvider, build
from adapters.providers.mailgun.settings import (
    API_KEY,
    KIND,
    MAX_BATCH_SIZE,
    WEBHOOK_MAX_AGE_SECONDS,
    WEBHOOK_SIGNING_KEY,
    MailgunSettings,
)
from adapters.providers.mailgun.webhooks import verify_webhook
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "API_KEY",
    "KIND",
    "MAX_BATCH_SIZE",
    "SPEC",
    "WEBHOOK_MAX_AGE_SECONDS",
    "WEBHOOK_SIGNING_KEY",
    "MailgunLookup",
    "MailgunProvider",
    "MailgunSettings",
    "backfill_events",
    "build",
    "parse",
    "poll_events",
    "verify_webhook",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=MailgunSettings,
    credentials=Credentials(required=(API_KEY,), optional=(WEBHOOK_SIGNING_KEY,)),
    build=build,
    parse=parse,
    verify_webhook=verify_webhook,
    poll=poll_events,
    backfill=backfill_events,
    lookup=MailgunLookup,
    events_sql=provider_mapping(__name__),
)
