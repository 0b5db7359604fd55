"""Polling Postmark's bounces API, for accounts without a public webhook endpoint.

``GET /bounces`` (newest first, ``count`` ≤ 500, ``count + offset`` ≤ 10,000,
``fromdate`` in US Eastern time). Bounce records from the API carry no ``Metadata``, so
polled events have a Postmark message id and a recipient but no message key.
https://postmarkapp.com/developer/api/bounce-api
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from adapters.providers.http import ApiClient
from adapters.providers.postmark.api import client, error_body, server_token
from adapters.providers.postmark.events import eastern, parse_timestamp
from adapters.providers.postmark.settings import PostmarkSettings
from mailers.config import ProviderAccountConfig
from mailers.errors import ProviderUnavailable

BOUNCES_PAGE_LIMIT = 10_000
"""``count + offset`` cannot exceed 10,000 on ``GET /bounces`` (bounce API page)."""

log = logging.getLogger(__name__)


class _Cursor(BaseModel):
    """Where polling stopped: the newest ``BouncedAt`` seen, and the IDs of the bounces
    within the look-back window before it (read already; the next poll reads them again)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: datetime
    ids: list[int | str] = Field(default_factory=list)

    def dump(self) -> str:
        return json.dumps(
            {"since": self.since.isoformat(), "ids": sorted(self.ids, key=str)},
            separators=(",", ":"),
        )


def eastern_bound(moment: datetime, *, upper: bool = False) -> str:
    """``fromdate`` for an aware moment (``todate`` when ``upper``): US Eastern wall time
    in whole seconds, rounded down (up), so the search covers ``moment`` however it is read.

    Postmark's filters take a wall time without offset. The hour repeated when daylight
    saving time ends (01:00-02:00 on the first Sunday of November) names two instants an
    hour apart and Postmark does not say which it reads, so a bound inside it is moved one
    wall hour out (earlier for ``fromdate``, later for ``todate``): either reading then
    lies on the safe side, at the cost of reading up to two hours more (filtered after).
    """
    wall = moment.astimezone(eastern()).replace(tzinfo=None)
    whole = wall.replace(microsecond=0)
    if upper and whole != wall:
        whole += timedelta(seconds=1)
    if _ambiguous(whole):
        whole += timedelta(hours=1) if upper else -timedelta(hours=1)
    return whole.isoformat()


def _ambiguous(wall: datetime) -> bool:
    """Whether a US Eastern wall time occurs twice (the fall-back hour)."""
    zone = eastern()
    first = wall.replace(tzinfo=zone, fold=0).utcoffset()
    return first != wall.replace(tzinfo=zone, fold=1).utcoffset()


def poll_events(
    account: str,
    config: ProviderAccountConfig,
    settings: PostmarkSettings,
    cursor: str | None,
) -> tuple[list[bytes], str | None]:
    """New bounces (and spam complaints) from ``GET /bounces`` since ``cursor``.

    Returns each new bounce as one JSON payload (oldest first) and the cursor after them;
    the same cursor when nothing is new. Each poll re-reads the last
    ``poll_lookback_seconds`` before the newest bounce seen, so a bounce listed late with
    an earlier ``BouncedAt`` is still found; the cursor keeps the IDs of that window so
    nothing is returned twice. One poll reads at most 10,000 bounces (Postmark's search
    limit); poll more often than that many arrive.
    """
    previous = _parse_cursor(account, cursor)
    lookback = timedelta(seconds=settings.poll_lookback_seconds)
    with client(account, settings, server_token(account, config)) as api:
        start = previous.since - lookback if previous else None
        fetched = _fetch_bounces(api, settings, start)
    seen = set(previous.ids) if previous else set()
    new: dict[int | str, tuple[datetime, dict[str, Any]]] = {}
    for bounced_at, bounce_id, item in fetched:
        if start is not None and (bounced_at < start or bounce_id in seen):
            continue  # read by an earlier poll (or before the window: assumed read)
        new[bounce_id] = (bounced_at, item)
    times = [t for t, _, _ in fetched] + ([previous.since] if previous else [])
    if not times:
        return [], cursor
    since = max(times)
    window = {i for t, i, _ in fetched if t >= since - lookback}
    next_cursor = _Cursor(since=since, ids=sorted(window, key=str)).dump()
    ordered = sorted(new.items(), key=lambda kv: (kv[1][0], str(kv[0])))
    payloads = [json.dumps(item).encode() for _, (_, item) in ordered]
    log.debug("postmark %s: polled %d new bounces", account, len(payloads))
    return payloads, next_cursor


def _parse_cursor(account: str, cursor: str | None) -> _Cursor | None:
    if not cursor:
        return None
    try:
        parsed = _Cursor.model_validate_json(cursor)
    except ValueError as err:
        raise ProviderUnavailable(
            account, "the stored poll cursor is not a Postmark bounces cursor; remove it to re-poll"
        ) from err
    if parsed.since.tzinfo is None:
        parsed = _Cursor(since=parsed.since.replace(tzinfo=UTC), ids=parsed.ids)
    return parsed


def _fetch_bounces(
    api: ApiClient, settings: PostmarkSettings, start: datetime | None
) -> list[tuple[datetime, int | str, dict[str, Any]]]:
    """Every bounce from ``start`` on (newest first), paging up to the 10,000 limit."""
    count = settings.poll_page_size
    params: dict[str, str | int] = {"count": count, "messagestream": settings.message_stream}
    if start is not None:
        params["fromdate"] = eastern_bound(start)
    fetched: list[tuple[datetime, int | str, dict[str, Any]]] = []
    offset = 0
    while offset + count <= BOUNCES_PAGE_LIMIT:
        page = get_json(api, "/bounces", {**params, "offset": offset})
        bounces = page.get("Bounces") if isinstance(page, dict) else None
        if not isinstance(bounces, list):
            raise ProviderUnavailable(api.account, "GET /bounces answered without a Bounces list")
        for item in bounces:
            try:
                bounced_at = parse_timestamp(item.get("BouncedAt")).astimezone(UTC)
                bounce_id = item["ID"]
            except (AttributeError, KeyError, ValueError):
                log.warning("postmark %s: skipped a bounce without ID or BouncedAt", api.account)
                continue
            fetched.append((bounced_at, bounce_id, item))
        if len(bounces) < count:
            break
        offset += count
    else:
        log.warning(
            "postmark %s: more than %d bounces since the cursor; older ones were not read",
            api.account,
            BOUNCES_PAGE_LIMIT,
        )
    return fetched


def get_json(api: ApiClient, path: str, params: Mapping[str, Any]) -> Any:
    """GET and decode JSON; failures become the errors pollers report per account."""
    return api.read_json("GET", path, f"GET {path}", explain=_explain, params=dict(params))


def _explain(response: httpx.Response) -> str:
    code, text = error_body(response)
    return f"ErrorCode {code}: {text}"
