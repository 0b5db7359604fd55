"""Finding a message in Postmark's records, to settle one left in doubt.

``GET /messages/outbound`` searches the server's sent messages by recipient and by our
``metadata_mailers_message_key`` (https://postmarkapp.com/developer/api/messages-api).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from adapters.providers.payloads import mapping, mappings
from adapters.providers.postmark.api import client, server_token
from adapters.providers.postmark.polling import get_json
from adapters.providers.postmark.settings import PostmarkSettings
from mailers.config import ProviderAccountConfig
from mailers.messages import MESSAGE_KEY_FIELD, MessageRef
from mailers.reconcile import InDoubt, Sighting


class PostmarkLookup:
    """Postmark's outbound message search for one server."""

    def __init__(
        self, account: str, config: ProviderAccountConfig, settings: PostmarkSettings
    ) -> None:
        self.account = account
        self.settings = settings
        self.absent_after = timedelta(seconds=config.reconcile_absent_after_seconds)
        self._token = server_token(account, config)

    def lookup(self, messages: Sequence[InDoubt]) -> list[Sighting]:
        """What the outbound message search says of each message."""
        sightings = []
        with client(self.account, self.settings, self._token) as api:
            for message in messages:
                answer = get_json(
                    api,
                    "/messages/outbound",
                    {
                        "count": 50,
                        "offset": 0,
                        "recipient": message.recipient,
                        f"metadata_{MESSAGE_KEY_FIELD}": message.message_key,
                    },
                )
                found = [
                    m
                    for m in mappings(mapping(answer).get("Messages"))
                    if MessageRef.from_metadata(m.get("Metadata")).message_key
                    == message.message_key
                ]
                sightings.append(
                    Sighting(
                        message.message_key,
                        accepted=bool(found),
                        provider_message_id=found[0].get("MessageID") if found else None,
                    )
                )
        return sightings
