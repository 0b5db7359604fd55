"""Finding a message in Mailgun's records, to settle one left in doubt.

The events API, ``event=accepted`` for the recipient from shortly before the hand-over
(https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/events),
matched on our message key in ``user-variables``: Mailgun logs an ``accepted`` event for
every message its API took.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, timedelta
from urllib.parse import urlencode

from adapters.providers.http import ApiClient
from adapters.providers.mailgun.api import api_key, client, domain_path
from adapters.providers.mailgun.polling import events_page, same_origin
from adapters.providers.mailgun.settings import MailgunSettings
from adapters.providers.network import origin
from adapters.providers.payloads import mapping, mappings
from mailers.config import ProviderAccountConfig
from mailers.messages import MessageRef
from mailers.reconcile import InDoubt, Sighting

SEARCH_FROM_BEFORE = timedelta(minutes=2)
"""How far before the recorded hand-over to search (clocks differ a little)."""


class MailgunLookup:
    """Mailgun's events API for one sending domain."""

    def __init__(
        self, account: str, config: ProviderAccountConfig, settings: MailgunSettings
    ) -> None:
        self.account = account
        self.settings = settings
        self.absent_after = timedelta(seconds=config.reconcile_absent_after_seconds)
        self._api_key = api_key(account, config)

    def lookup(self, messages: Sequence[InDoubt]) -> list[Sighting]:
        """What the ``accepted`` events say of each message (those with a recipient and a
        recorded hand-over; the others cannot be searched for)."""
        sightings = []
        path = domain_path(self.settings, "events")
        with client(self.account, self.settings, self._api_key) as api:
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
                sightings.append(self._search(api, message, f"{path}?{urlencode(query)}"))
        return sightings

    def _search(self, api: ApiClient, message: InDoubt, url: str) -> Sighting:
        home = origin(self.settings.base_url)
        for _ in range(self.settings.poll_max_pages):
            items, next_url = events_page(api, url)
            if not items:
                return Sighting(message.message_key, accepted=False)
            for item in mappings(items):
                ref = MessageRef.from_metadata(item.get("user-variables"))
                if ref.message_key == message.message_key:
                    headers = mapping(mapping(item.get("message")).get("headers"))
                    return Sighting(
                        message.message_key,
                        accepted=True,
                        provider_message_id=headers.get("message-id"),
                    )
            url = same_origin(self.account, next_url, home, "paging.next")
        raise RuntimeError(f"more than {self.settings.poll_max_pages} pages of accepted events")
