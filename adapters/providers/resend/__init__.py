"""The Resend provider: batch sends under idempotency keys, Svix-signed webhooks back in.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`ResendSettings`, credential keys, limits
``sending``    ``POST /emails/batch`` (100 per call) with an ``Idempotency-Key``
``events``     webhook event types and bounce types → canonical events
``webhooks``   Svix signature, freshness and replay refusal
=============  ===================================================================

Resend deduplicates a send by its idempotency key for 24 hours, so the spec is
``idempotent``: a call without a usable answer is made again under the same key
(:mod:`adapters.providers.base`). The API lists sent emails (``GET /emails``, newest
first, no filters) but has no events list to poll, and finding one of our messages
would mean scanning that list, so the package neither polls nor looks messages up:
doubt is settled by the idempotent retry and by landed events.
https://resend.com/docs/api-reference/emails/list-emails
"""

from __future__ import annotations

from adapters.bulk_events import provider_mapping
from adapters.providers.resend.events import parse
from adapters.providers.resend.sending import ResendProvider, build
from adapters.providers.resend.settings import (
    API_KEY,
    KIND,
    MAX_BATCH_SIZE,
    WEBHOOK_SECRET,
    ResendSettings,
)
from adapters.providers.resend.webhooks import verify_webhook
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "API_KEY",
    "KIND",
    "MAX_BATCH_SIZE",
    "SPEC",
    "WEBHOOK_SECRET",
    "ResendProvider",
    "ResendSettings",
    "build",
    "parse",
    "verify_webhook",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=ResendSettings,
    credentials=Credentials(required=(API_KEY,), optional=(WEBHOOK_SECRET,)),
    build=build,
    parse=parse,
    verify_webhook=verify_webhook,
    idempotent=True,
    events_sql=provider_mapping(__name__),
)
