"""Backfilling the Postmark feedback a receiver missed: bounces for the window, message
details for the messages still open.

Postmark has no time-ranged events API, but two of its APIs together hold every final
event:

* ``GET /bounces?fromdate=..&todate=..`` lists the window's bounce records (hard and soft
  bounces, spam complaints, ``Transient`` delays, ...), newest first, ``count`` ≤ 500 and
  ``count + offset`` ≤ 10,000 per search; a window with more is searched again up to the
  oldest bounce listed. Each record is landed as the API returns it, and the parser gives
  it the bounce webhook's event id (``postmark:bounce:<ID>``).
  https://postmarkapp.com/developer/api/bounce-api
* Deliveries are listed only in one message's details, ``GET
  /messages/outbound/{id}/details``, whose ``MessageEvents`` hold ``Delivered``,
  ``Bounced``, ``Transient``, ``Opened``, ``LinkClicked`` and ``SubscriptionChanged``
  events. They are asked for the open messages only (``open_message_ids``, the ledger's
  messages without a final event) that no bounce of the window settled, at most
  ``backfill_max_details`` per backfill (the rest stay open for the next one); a message
  past Postmark's retention (422, ``ErrorCode`` 701) is skipped. A ``Delivered`` event is
  landed as the Delivery webhook record it stands for; a ``Bounced`` event whose bounce the
  window's search did not list (one after the window) is read with ``GET
  /bounces/{bounceid}``. Opens, clicks, delays and subscription changes settle nothing
  and are left to webhooks. https://postmarkapp.com/developer/api/messages-api

Event ids. A Delivery's id hashes its ``MessageID``, ``Recipient`` and ``DeliveredAt``
text (:mod:`.events`). The delivery webhook writes ``DeliveredAt`` in UTC with a ``Z``
(``2019-11-05T16:33:54.9070259Z``, delivery webhook page) while the messages API writes
the same instant in US Eastern time with its offset (``2014-02-14T11:13:10.8054242-05:00``),
so :func:`webhook_time` rewrites the instant the webhook's way, keeping the fraction's
digits as Postmark wrote them: the backfilled delivery then has the webhook's id, and
ingestion stores whichever arrives first once. The details carry ``Metadata``, so a
backfilled delivery has our message key; a bounce from the bounces API has none and joins
the ledger by account and ``MessageID``, as polled bounces do.

Every GET is retried on 429 (honouring ``Retry-After``), 503, other 5xx, timeouts and
dropped connections: a read changes nothing, so unlike a send it is safe to repeat.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from adapters.providers.hooks import Ambiguous, AuthFailed, Retryable, RetryPolicy
from adapters.providers.http import ApiClient, call
from adapters.providers.payloads import mapping, mappings
from adapters.providers.postmark.api import client, error_body, server_token
from adapters.providers.postmark.events import classify, eastern, parse_timestamp
from adapters.providers.postmark.polling import BOUNCES_PAGE_LIMIT, eastern_bound
from adapters.providers.postmark.settings import PostmarkSettings
from mailers.config import ProviderAccountConfig
from mailers.errors import ProviderAuthError, ProviderUnavailable
from mailers.events import EventType

log = logging.getLogger(__name__)

READ_RETRY = RetryPolicy(attempts=5, base_delay=1.0, max_delay=60.0)
"""How hard one backfill GET is retried before the account's backfill fails."""

UNDELIVERED = frozenset({EventType.BOUNCED, EventType.FAILED, EventType.REJECTED})
"""Final events after which no delivery follows: a message with one in the window's
bounces needs no details call. A spam complaint follows a delivery, so a complained
message is still asked about (for its ``Delivered`` event)."""

MESSAGE_NOT_FOUND = 701
"""``ErrorCode`` of a message id Postmark does not know (or no longer keeps)."""

_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def backfill_events(
    account: str,
    config: ProviderAccountConfig,
    settings: PostmarkSettings,
    start: datetime,
    end: datetime,
    open_message_ids: Sequence[str] = (),
    *,
    retry: RetryPolicy = READ_RETRY,
    sleep: Callable[[float], None] = time.sleep,
) -> list[bytes]:
    """The bounce records of ``[start, end]`` (naive UTC), oldest first, then the
    deliveries (and later bounces) of the open messages the bounces did not settle."""
    begin, until = start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)
    with client(account, settings, server_token(account, config)) as api:
        reader = _Reader(api, retry, sleep)
        bounces = window_bounces(reader, settings, begin, until)
        records = [item for _, item in sorted(bounces.values(), key=_bounce_order)]
        settled = {
            str(item.get("MessageID"))
            for _, item in bounces.values()
            if classify(item)[0] in UNDELIVERED
        }
        asked = [m for m in dict.fromkeys(open_message_ids) if m not in settled]
        if len(asked) > settings.backfill_max_details:
            log.warning(
                "postmark %s: %d open messages, asking about the first %d "
                "(settings.backfill_max_details); the rest stay open for the next backfill",
                account,
                len(asked),
                settings.backfill_max_details,
            )
            asked = asked[: settings.backfill_max_details]
        for message_id in asked:
            records += _message_records(reader, message_id, bounces)
    log.debug("postmark %s: backfilled %d records", account, len(records))
    return [json.dumps(record).encode() for record in records]


def window_bounces(
    reader: _Reader, settings: PostmarkSettings, start: datetime, end: datetime
) -> dict[str, tuple[datetime, dict[str, Any]]]:
    """Every bounce record with ``BouncedAt`` in ``[start, end]`` by its ``ID``.

    One search lists at most 10,000; when it is full, the search is made again with
    ``todate`` at the oldest bounce listed (records of that second come twice and are
    kept once), until a search ends short of its limit.
    """
    count = settings.poll_page_size
    found: dict[str, tuple[datetime, dict[str, Any]]] = {}
    todate = eastern_bound(end, upper=True)
    while True:
        params: dict[str, str | int] = {
            "count": count,
            "messagestream": settings.message_stream,
            "fromdate": eastern_bound(start),
            "todate": todate,
        }
        oldest: datetime | None = None
        offset = 0
        while offset + count <= BOUNCES_PAGE_LIMIT:
            items = _bounce_page(reader, {**params, "offset": offset})
            for bounced_at, bounce_id, item in items:
                oldest = bounced_at if oldest is None else min(oldest, bounced_at)
                if start <= bounced_at <= end:
                    found[bounce_id] = (bounced_at, item)
            if len(items) < count:
                return found
            offset += count
        narrower = eastern_bound(oldest, upper=True) if oldest else todate
        if narrower >= todate:
            raise ProviderUnavailable(
                reader.api.account,
                f"GET /bounces lists more than {BOUNCES_PAGE_LIMIT} bounces up to {todate} "
                "(US Eastern) within one second; they cannot be paged",
            )
        todate = narrower


def _bounce_page(
    reader: _Reader, params: Mapping[str, Any]
) -> list[tuple[datetime, str, dict[str, Any]]]:
    page = reader.json("/bounces", params)
    bounces = page.get("Bounces") if isinstance(page, dict) else None
    if not isinstance(bounces, list):
        raise ProviderUnavailable(reader.api.account, "GET /bounces answered without Bounces")
    items = []
    for item in mappings(bounces):
        try:
            bounced_at = parse_timestamp(item.get("BouncedAt")).astimezone(UTC)
            bounce_id = str(item["ID"])
        except (KeyError, ValueError):
            log.warning("postmark %s: skipped a bounce without ID or BouncedAt", reader.api.account)
            continue
        items.append((bounced_at, bounce_id, item))
    return items


def _bounce_order(entry: tuple[datetime, dict[str, Any]]) -> tuple[datetime, str]:
    return entry[0], str(entry[1].get("ID"))


def _message_records(
    reader: _Reader, message_id: str, bounces: dict[str, tuple[datetime, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The final events of one message's details as the webhook records they stand for."""
    details = reader.details(message_id)
    if details is None:
        return []
    records = []
    for event in mappings(details.get("MessageEvents")):
        kind = event.get("Type")
        if kind == "Delivered":
            record = delivery_record(details, event)
            if record is None:
                log.warning("postmark: skipped an unreadable Delivered event of %s", message_id)
            else:
                records.append(record)
        elif kind == "Bounced":
            bounce_id = str(mapping(event.get("Details")).get("BounceID") or "")
            if bounce_id and bounce_id not in bounces:
                bounce = reader.bounce(bounce_id)
                if bounce is not None:
                    bounces[bounce_id] = (parse_timestamp(bounce.get("BouncedAt")), bounce)
                    records.append(bounce)
    return records


def delivery_record(details: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Delivery webhook record of one ``Delivered`` message event (None if unreadable).

    The webhook's fields come from the details (``MessageID``, ``MessageStream``, ``Tag``,
    ``Metadata``) and the event (``Recipient``, ``DeliveredAt``, ``Details`` from its
    ``DeliveryMessage``); ``ServerID`` is not in either and is left out. The event itself
    is kept under ``MessageEvent``: what Postmark said, beside what it was read as.
    """
    delivered_at = webhook_time(event.get("ReceivedAt"))
    message_id, recipient = details.get("MessageID"), event.get("Recipient")
    if not (delivered_at and isinstance(message_id, str) and message_id):
        return None
    if not (isinstance(recipient, str) and recipient):
        return None
    return {
        "RecordType": "Delivery",
        "MessageStream": details.get("MessageStream") or "outbound",
        "MessageID": message_id,
        "Recipient": recipient,
        "DeliveredAt": delivered_at,
        "Details": str(mapping(event.get("Details")).get("DeliveryMessage") or ""),
        "Tag": details.get("Tag") or "",
        "Metadata": mapping(details.get("Metadata")),
        "MessageEvent": dict(event),
    }


def webhook_time(value: object) -> str | None:
    """A Postmark timestamp as its webhooks write it: UTC, ``Z``, the fraction's digits
    kept verbatim (a naive one is US Eastern); None when it is not ISO 8601."""
    found = _ISO.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        return None
    whole, fraction, offset = found.groups()
    try:
        moment = datetime.fromisoformat(whole + (offset or ""))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=eastern())
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{utc.isoformat()}{fraction or ''}Z"


class _Reader:
    """The account's GETs, each retried on what a read may safely be retried on."""

    def __init__(self, api: ApiClient, retry: RetryPolicy, sleep: Callable[[float], None]) -> None:
        self.api = api
        self.retry = retry
        self.sleep = sleep

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """One GET: refused credentials raise ``ProviderAuthError``; 429, 5xx and transport
        failures are retried, then raise ``ProviderUnavailable``; any other answer is
        returned."""
        what = f"GET {path}"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call(self.api.client, "GET", path, params=dict(params or {}))
            except AuthFailed as err:
                raise ProviderAuthError(self.api.account, f"{what}: {err}") from err
            except (Retryable, Ambiguous) as err:
                if attempt == self.retry.attempts:
                    raise ProviderUnavailable(
                        self.api.account, f"{what}: {err} ({attempt} attempts)"
                    ) from err
                wait = err.retry_after if isinstance(err, Retryable) else None
                self.sleep(min(self.retry.max_delay, self.retry.delay(attempt, wait)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """A GET that must answer 2xx JSON (``ProviderUnavailable`` otherwise)."""
        response = self.get(path, params)
        if response.status_code >= 300:
            raise self._unavailable(path, response)
        return self._decode(path, response)

    def details(self, message_id: str) -> dict[str, Any] | None:
        """One message's details; None for a message Postmark does not keep."""
        path = f"/messages/outbound/{quote(message_id, safe='')}/details"
        response = self.get(path)
        if response.status_code == 422 and error_body(response)[0] == MESSAGE_NOT_FOUND:
            log.info("postmark %s: no message %s (past retention?)", self.api.account, message_id)
            return None
        if response.status_code >= 300:
            raise self._unavailable(path, response)
        return mapping(self._decode(path, response))

    def bounce(self, bounce_id: str) -> dict[str, Any] | None:
        """One bounce record; None when Postmark refuses the id (422)."""
        path = f"/bounces/{bounce_id}"
        response = self.get(path)
        if response.status_code == 422:
            log.warning("postmark %s: bounce %s not found", self.api.account, bounce_id)
            return None
        if response.status_code >= 300:
            raise self._unavailable(path, response)
        found = mapping(self._decode(path, response))
        try:
            parse_timestamp(found.get("BouncedAt"))
        except ValueError:
            log.warning("postmark %s: bounce %s without BouncedAt", self.api.account, bounce_id)
            return None
        return found

    def _unavailable(self, path: str, response: httpx.Response) -> ProviderUnavailable:
        code, text = error_body(response)
        return ProviderUnavailable(
            self.api.account,
            f"GET {path} answered {response.status_code}: ErrorCode {code}: {text}",
        )

    def _decode(self, path: str, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as err:
            raise ProviderUnavailable(self.api.account, f"GET {path} answered non-JSON") from err
