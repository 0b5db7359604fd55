"""Provider records searched by message key, to settle messages in doubt.

:func:`mailers.reconcile.reconcile` asks these when a message was handed over and no
usable answer came back. Each lookup answers only for what the provider's records can
prove: accepted (with the provider's id), or no record of it at all.

* **Postmark**: outbound message search, ``GET /messages/outbound`` filtered by recipient
  and by our ``metadata_mailers_message_key`` (https://postmarkapp.com/developer/api/
  messages-api); every message Postmark accepted is listed there for the retention period.
* **Mailgun**: the events API, ``event=accepted`` for the recipient from shortly before
  the hand-over (https://documentation.mailgun.com/docs/mailgun/api-reference/send/
  mailgun/events), matched on the ``mailers_message_key`` user variable; Mailgun logs an
  ``accepted`` event for every message its API took.

SendGrid (no message search without a paid add-on), SES and SMTP have no such record:
their doubt is settled by landed events only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from adapters.providers import mailgun
from adapters.providers.http import make_client
from mailers.config import ProviderAccountConfig
from mailers.messages import MESSAGE_KEY_FIELD
from mailers.reconcile import InDoubt, Sighting

SEARCH_FROM_BEFORE = timedelta(minutes=2)
"""How far before the recorded hand-over to search (clocks differ a little)."""


class MailgunLookup:
    """Mailgun's events API for one sending domain."""

    def __init__(
        self, account: str, config: ProviderAccountConfig, settings: mailgun.Settings
    ) -> None:
        self.account = account
        self.settings = settings
        self.absent_after = timedelta(seconds=config.reconcile_absent_after_seconds)
        self._api_key = mailgun._secret(config, mailgun.API_KEY, f"mailgun account {account!r}")

    def lookup(self, messages: Sequence[InDoubt]) -> list[Sighting]:
        sightings = []
        path = f"/v3/{quote(self.settings.domain, safe='')}/events"
        with make_client(
            self.settings.base_url,
            auth=("api", self._api_key),
            timeout=mailgun._timeout(self.settings),
        ) as client:
            for message in messages:
                if message.dispatched_at is None or message.recipient is None:
                    continue
                begin = message.dispatched_at.replace(tzinfo=UTC) - SEARCH_FROM_BEFORE
                query = {
                    "begin": str(int(begin.timestamp())),
                    "ascending": "yes",
                    "event": "accepted",
                    "recipient": message.recipient,
                    "limit": "300",
                }
                sightings.append(self._search(client, message, f"{path}?{urlencode(query)}"))
        return sightings

    def _search(self, client: Any, message: InDoubt, url: str) -> Sighting:
        origin = mailgun._origin(self.settings.base_url)
        for _ in range(self.settings.poll_max_pages):
            items, next_url = mailgun._events_page(client, self.account, url)
            if not items:
                return Sighting(message.message_key, accepted=False)
            for item in items:
                variables = item.get("user-variables") or {}
                if variables.get(MESSAGE_KEY_FIELD) == message.message_key:
                    headers = (item.get("message") or {}).get("headers") or {}
                    return Sighting(
                        message.message_key,
                        accepted=True,
                        provider_message_id=headers.get("message-id"),
                    )
            url = mailgun._same_origin(self.account, next_url, origin, "paging.next")
        raise RuntimeError(f"more than {self.settings.poll_max_pages} pages of accepted events")
