"""RFC 5322 messages built from :class:`~mailers.messages.OutboundMessage`.

Used wherever a provider takes raw MIME (the sandbox's ``.eml`` files; SMTP and SES raw
sends later): multipart/alternative with a text and an HTML part, our headers included,
CRLF line endings. Built with the ``compat32`` API: the modern ``EmailMessage`` re-parses
every header through its registry and is several times slower, which matters when every
message of a campaign is built.
"""

from __future__ import annotations

from email import policy
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate

from mailers.clock import epoch
from mailers.messages import OutboundMessage

_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
# Long headers (a signed unsubscribe URL) stay on one line up to RFC 5322's 998 limit.
_WIRE = policy.compat32.clone(linesep="\r\n", max_line_length=998)


def _header(value: str) -> str:
    """ASCII headers as they are; anything else as RFC 2047 encoded words."""
    return value if value.isascii() else Header(value, "utf-8").encode()


def build_mime(message: OutboundMessage, *, message_id: str) -> MIMEMultipart:
    """The message as a MIME object; ``message_id`` goes in ``Message-ID`` (with <>)."""
    mime = MIMEMultipart("alternative", policy=_WIRE)
    mime["From"] = formataddr((message.from_name or "", message.from_address), "utf-8")
    mime["To"] = message.recipient
    mime["Subject"] = _header(message.subject)
    mime["Date"] = formatdate(epoch(), usegmt=True)
    mime["Message-ID"] = f"<{message_id}>"
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    for name, value in message.headers.items():
        mime[name] = _header(value)
    # MIMEText takes a Charset object (quoted-printable, not base64) though typeshed says str.
    mime.attach(MIMEText(message.text, "plain", _UTF8_QP))  # type: ignore[arg-type]
    mime.attach(MIMEText(message.html, "html", _UTF8_QP))  # type: ignore[arg-type]
    return mime


def mime_bytes(message: OutboundMessage, *, message_id: str) -> bytes:
    """The message on the wire: bytes with CRLF line endings."""
    return build_mime(message, message_id=message_id).as_bytes(policy=_WIRE)
