"""The SendGrid provider: v3 Mail Send out, the signed Event Webhook back in.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`SendGridSettings`, credential keys, limits
``sending``    ``POST /v3/mail/send``, a request per shared content (1,000 per call)
``events``     event names and bounce classifications → canonical events
``webhooks``   ECDSA signature, freshness and replay refusal
=============  ===================================================================

SendGrid has no events pull API on the free tier (the Email Activity Feed API is a paid
add-on and returns messages, not events), so the package neither polls nor looks messages
up: doubt is settled by landed events.
"""

from __future__ import annotations

from adapters.bulk_events import provider_mapping
from adapters.providers.sendgrid.events import parse
from adapters.providers.sendgrid.sending import SendGridProvider, build
from adapters.providers.sendgrid.settings import (
    API_KEY,
    KIND,
    MAX_BATCH_SIZE,
    WEBHOOK_PUBLIC_KEY,
    SendGridSettings,
)
from adapters.providers.sendgrid.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TOLERANCE_SECONDS,
    verify_webhook,
)
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "API_KEY",
    "KIND",
    "MAX_BATCH_SIZE",
    "SIGNATURE_HEADER",
    "SPEC",
    "TIMESTAMP_HEADER",
    "WEBHOOK_PUBLIC_KEY",
    "WEBHOOK_TOLERANCE_SECONDS",
    "SendGridProvider",
    "SendGridSettings",
    "build",
    "parse",
    "verify_webhook",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=SendGridSettings,
    credentials=Credentials(required=(API_KEY,), optional=(WEBHOOK_PUBLIC_KEY,)),
    build=build,
    parse=parse,
    verify_webhook=verify_webhook,
    events_sql=provider_mapping(__name__),
)
