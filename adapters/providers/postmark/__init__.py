"""The Postmark provider: batch sends, basic-auth webhooks, the bounces and messages APIs.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`PostmarkSettings`, credential keys, limits
``api``        the account's HTTP client and Postmark's error codes
``sending``    ``POST /email/batch`` (500 per call), per-message results
``events``     record and bounce types → canonical events
``webhooks``   basic-auth credentials and replay refusal
``polling``    ``GET /bounces`` from a cursor
``backfill``   a window's ``GET /bounces``, open messages' ``/details`` deliveries
``lookup``     ``GET /messages/outbound`` by our message key, for reconciliation
=============  ===================================================================
"""

from __future__ import annotations

from adapters.bulk_events import provider_mapping
from adapters.providers.postmark.backfill import backfill_events
from adapters.providers.postmark.events import parse
from adapters.providers.postmark.lookup import PostmarkLookup
from adapters.providers.postmark.polling import poll_events
from adapters.providers.postmark.sending import build
from adapters.providers.postmark.settings import (
    KIND,
    MAX_BATCH_SIZE,
    SERVER_TOKEN,
    WEBHOOK_PASSWORD,
    WEBHOOK_USERNAME,
    PostmarkSettings,
)
from adapters.providers.postmark.webhooks import verify_webhook
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "KIND",
    "MAX_BATCH_SIZE",
    "SERVER_TOKEN",
    "SPEC",
    "WEBHOOK_PASSWORD",
    "WEBHOOK_USERNAME",
    "PostmarkSettings",
    "backfill_events",
    "build",
    "parse",
    "poll_events",
    "verify_webhook",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=PostmarkSettings,
    credentials=Credentials(
        required=(SERVER_TOKEN,), optional=(WEBHOOK_USERNAME, WEBHOOK_PASSWORD)
    ),
    build=build,
    parse=parse,
    verify_webhook=verify_webhook,
    poll=poll_events,
    backfill=backfill_events,
    lookup=PostmarkLookup,
    events_sql=provider_mapping(__name__),
)
