"""Polling Mailgun's events API, for accounts without a public webhook endpoint.

``GET /v3/{domain}/events?begin=..&ascending=yes&limit=..`` then the ``paging.next`` URLs
until an empty page (https://documentation.mailgun.com/docs/mailgun/api-reference/send/
mailgun/events). Mailgun marks this API as superseded by its Logs API; webhooks are the
primary path, polling is the backstop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from adapters.providers.http import ApiClient
from adapters.providers.mailgun.api import api_key, client, domain_path, error_message
from adapters.providers.mailgun.settings import MailgunSettings
from adapters.providers.network import origin
from adapters.providers.payloads import mapping
from mailers.clock import epoch
from mailers.config import ProviderAccountConfig
from mailers.errors import ProviderUnavailable

POLLED_EVENTS = "delivered OR failed OR rejected OR opened OR clicked OR unsubscribed OR complained"
"""The ``event`` filter expression of polls: every event type that maps to an outcome."""


def poll_events(
    account: str, config: ProviderAccountConfig, settings: MailgunSettings, cursor: str | None
) -> tuple[list[bytes], str | None]:
    """New events since ``cursor`` (one JSON item per payload) and the cursor after them.

    Without an end the ascending range keeps growing, and the URL that returned the empty
    page returns what was written since: it is the cursor (unchanged when nothing is new).
    One poll reads at most ``settings.poll_max_pages`` pages.
    """
    key = api_key(account, config)
    home = origin(settings.base_url)
    if cursor is None:
        query = {
            "begin": str(int(epoch()) - settings.poll_lookback_seconds),
            "ascending": "yes",
            "limit": str(settings.poll_page_size),
            "event": POLLED_EVENTS,
        }
        url = f"{settings.base_url}{domain_path(settings, 'events')}?{urlencode(query)}"
    else:
        url = same_origin(account, cursor, home, "the stored cursor")
    payloads: list[bytes] = []
    with client(account, settings, key) as api:
        for _ in range(settings.poll_max_pages):
            items, next_url = events_page(api, url)
            if not items:
                return payloads, url
            payloads.extend(json.dumps(item).encode() for item in items)
            url = same_origin(account, next_url, home, "paging.next")
    return payloads, url


def backfill_events(
    account: str,
    config: ProviderAccountConfig,
    settings: MailgunSettings,
    start: datetime,
    end: datetime,
    open_message_ids: Sequence[str] = (),
) -> list[bytes]:
    """Every event of ``[start, end]`` (naive UTC): ``begin`` and ``end`` bound the range,
    so the pages end with an empty one however much is written meanwhile. The events API
    is time-ranged, so ``open_message_ids`` are not needed."""
    key = api_key(account, config)
    home = origin(settings.base_url)
    query = {
        "begin": str(int(start.replace(tzinfo=UTC).timestamp())),
        "end": str(int(end.replace(tzinfo=UTC).timestamp()) + 1),
        "ascending": "yes",
        "limit": str(settings.poll_page_size),
        "event": POLLED_EVENTS,
    }
    url = f"{settings.base_url}{domain_path(settings, 'events')}?{urlencode(query)}"
    payloads: list[bytes] = []
    with client(account, settings, key) as api:
        while True:
            items, next_url = events_page(api, url)
            if not items:
                return payloads
            payloads.extend(json.dumps(item).encode() for item in items)
            url = same_origin(account, next_url, home, "paging.next")


def events_page(api: ApiClient, url: str) -> tuple[list[Any], str]:
    """One page of the events API: its items and its ``paging.next`` URL (``url`` itself
    for an empty page); failures become the errors pollers report per account."""
    page = api.read_json("GET", url, "events API", explain=error_message)
    items = page.get("items") if isinstance(page, dict) else None
    next_url = mapping(page.get("paging")).get("next") if isinstance(page, dict) else None
    if not isinstance(items, list) or (items and not isinstance(next_url, str)):
        raise ProviderUnavailable(api.account, "events API page without 'items' and 'paging.next'")
    return items, next_url or url


def same_origin(account: str, url: str, home: tuple[str, str], what: str) -> str:
    """Follow only URLs on the configured API host: the API key goes with every request."""
    if origin(url) != home:
        raise ProviderUnavailable(
            account,
            f"{what} points at {origin(url)[1] or 'no host'}, not settings.base_url's host "
            f"{home[1]}; refusing to send the API key there (delete the stored cursor if "
            "base_url changed)",
        )
    return url
