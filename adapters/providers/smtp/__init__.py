"""The SMTP provider: any SMTP relay or submission server, over pooled connections.

Each account keeps up to ``pool_size`` persistent, authenticated connections (STARTTLS,
implicit TLS, or clear text on loopback only) and reuses them across batches; every
message is its own mail transaction. SMTP has no webhooks, no events API and no record
of sent mail to search, so the spec has no ``verify_webhook`` (the receiver answers 404
for an SMTP account), no ``poll`` and no ``lookup``.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`SmtpSettings`, credential keys, default ports
``replies``    reply codes, wait hints, what an attempt ends in, masked wording
``pool``       a session, the pool of idle ones, the lane one message goes over
``session``    connect, EHLO, STARTTLS or TLS, AUTH, and what their failures mean
``sending``    one mail transaction per message, the server's answers → outcomes
``events``     anything landed kept as ``unknown`` (there is no event feed)
=============  ===================================================================

References: RFC 5321 (SMTP; https://www.rfc-editor.org/rfc/rfc5321), RFC 1047 (duplicate
messages after a lost answer to the final "."; https://www.rfc-editor.org/rfc/rfc1047),
RFC 3207 (STARTTLS), RFC 8314 (implicit TLS for submission), RFC 4954 (AUTH and its 454,
530, 535 replies), RFC 6531 (SMTPUTF8), Amazon SES SMTP throttling replies
(https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html).
"""

from __future__ import annotations

from adapters.providers.smtp.events import parse
from adapters.providers.smtp.replies import DEFERRED
from adapters.providers.smtp.sending import SMTPProvider, build
from adapters.providers.smtp.settings import KIND, MAX_BATCH_SIZE, PASSWORD, USERNAME, SmtpSettings
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "DEFERRED",
    "KIND",
    "MAX_BATCH_SIZE",
    "PASSWORD",
    "SPEC",
    "USERNAME",
    "SMTPProvider",
    "SmtpSettings",
    "build",
    "parse",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=SmtpSettings,
    credentials=Credentials(optional=(USERNAME, PASSWORD)),
    build=build,
    parse=parse,
)
