"""Synthetic outbound messages the provider benchmarks send (imported by the scripts here)."""

from __future__ import annotations

from mailers.keys import message_key
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage


def bench_messages(
    count: int, *, prefix: str = "user", shared_body: bool = False
) -> list[OutboundMessage]:
    """``count`` rendered messages of workspace acme to ``<prefix><i>@example.com``.

    ``shared_body`` gives every message the same body (providers that take one body with
    per-recipient substitutions, e.g. SendGrid, then send one request for many)."""
    messages = []
    for i in range(count):
        recipient = f"{prefix}{i}@example.com"
        key = message_key("acme", "bench", recipient, "w")
        body = "shared" if shared_body else recipient
        messages.append(
            OutboundMessage(
                message_key=key,
                workspace="acme",
                stream="lifecycle",
                campaign="bench",
                send_window="w",
                identity="news",
                recipient=recipient,
                from_address="news@news.acme.test",
                sending_domain="news.acme.test",
                subject=f"Hi {i}",
                html=f"<p>{body}</p>",
                text=body,
                headers={MESSAGE_KEY_HEADER: key},
            )
        )
    return messages
