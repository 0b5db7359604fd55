"""RFC 5322 messages built from :class:`~mailers.messages.OutboundMessage`.

Used wherever a provider takes raw MIME (the sandbox's ``.eml`` files; SMTP and SES raw
sends later): multipart/alternative with a text and an HTML part, our headers included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from mailers.messages import OutboundMessage


def build_mime(message: OutboundMessage, *, message_id: str) -> EmailMessage:
    """The message as a MIME object; ``message_id`` goes in ``Message-ID`` (with <>)."""
    mime = EmailMessage(policy=SMTP)
    mime["From"] = formataddr((message.from_name or "", message.from_address))
    mime["To"] = message.recipient
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(datetime.now(UTC))
    mime["Message-ID"] = f"<{message_id}>"
    if message.reply_to:
        mime["Reply-To"] = message.reply_to
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime
