"""Outbound mailbox pools: which mailbox of a campaign sends a message, and when.

SDR-style outbound mail leaves from a few mailboxes, each of which has to send like a
person: so many messages a day, never two in quick succession, in business hours. For one
send run, :class:`MailboxPool` gives each message a mailbox and a *slot*, the earliest
moment it may be handed over:

* **Sticky**: a recipient keeps the mailbox that first wrote to them on the stream
  (:mod:`mailers.affinity`) when that mailbox is in the pool. When it is full today, busy
  past this run's wait budget or outside its hours, the message waits for it; it never
  switches.
* **Rotation** otherwise: the mailbox free soonest, then the one with the most room today,
  then the one with the fewest messages of this run, then pool order.
* **Daily caps** are the identity caps of the run's :class:`~mailers.allowance.Allowance`
  (``daily_cap``, ``warmup``), counted from the ledger: the pool compares their room, the
  assignment that follows a pick reserves it, so nothing is counted twice.
* **Gap**: two hand-overs of one mailbox are at least ``min_gap_seconds`` apart, across
  runs too (each mailbox's latest ``dispatching`` row is read when the run starts).
* **Send hours** (``send_hours``) on the mailbox's clock or the recipient's (a segment
  column); a recipient without a zone, or with a zone name that is not one, is read on the
  mailbox's clock (and counted in :attr:`MailboxPool.unknown_zones`).
* A slot lies on the mailbox's current day, since that is the day the caps were checked on.

A run may spend ``max_mailbox_wait_seconds`` (a campaign key) in all waiting for slots
(:meth:`MailboxPool.wait`; the time its provider calls take does not count): a message
whose earliest slot lies beyond what is left of that budget gets a :class:`MailboxWait`
and is deferred until exactly that moment. Slots are planned a record
batch ahead, and a provider call takes time, so hand-overs can only drift later: before
each call :meth:`MailboxPool.due` measures every mailbox's gap from its actual last
hand-over and withdraws messages whose hours (or day) have closed by then.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailers import clock
from mailers.allowance import Allowance, Refusal
from mailers.caps import ScopeKind, Usage, mailbox_provider_of
from mailers.config import CampaignRef, IdentityConfig, StreamKind, WorkspaceConfig
from mailers.ledger import LEDGER_TABLE, LedgerStatus, sql_text
from mailers.policy_config import SendHours, Weekday
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

Sleep = Callable[[float], None]

WAIT_SLICE_SECONDS = 30.0
"""Longest single sleep while waiting for a slot: between slices the run calls its
``keep_alive`` (the window claim's check), whose lease must not lapse during a wait."""

_WEEKDAYS = list(Weekday)


def needs_pool(campaign: CampaignRef, identities: Mapping[str, IdentityConfig]) -> bool:
    """Whether ``campaign`` picks its mailboxes through a :class:`MailboxPool`.

    Outbound campaigns always do (rotation and stickiness to the first mailbox are what an
    outbound pool means). Any other campaign does when one of its identities has a gap or
    send hours, which only the pool enforces. A lifecycle pool with caps alone keeps the
    deterministic hash draw: the allowance already holds it to those caps.
    """
    if campaign.config.stream is StreamKind.OUTBOUND:
        return True
    return any(i.min_gap_seconds or i.send_hours for i in identities.values())


@dataclass(frozen=True, slots=True)
class Slot:
    """A message's mailbox and the earliest moment (aware UTC) it may be handed over."""

    identity: str
    at: datetime
    closes: datetime
    """When the mailbox may no longer send it in this run (its hours end, or its day)."""
    zone: str
    """The clock its send hours were read on."""
    previous_free: datetime
    """When the mailbox was free before this slot was taken (see :meth:`MailboxPool.cancel`)."""


@dataclass(frozen=True, slots=True)
class MailboxWait:
    """A message no mailbox may send in this run: deferred until ``eligible_at``."""

    identity: str
    """The mailbox it waits for (sticky), or the pool's mailbox free soonest."""
    reason: str
    eligible_at: datetime
    """Naive UTC, like the ledger's column."""
    source: str
    """The config key that holds it back, e.g. ``identities.sdr_a.min_gap_seconds``."""


@dataclass(frozen=True, slots=True)
class _Option:
    """What one mailbox could do for one message: ``closes`` is ``None`` when not now."""

    identity: str
    at: datetime
    closes: datetime | None
    zone: str
    room: int | None
    why: str = ""
    source: str = ""


class MailboxPool:
    """The mailboxes of one campaign send run: picks, slots and hand-overs."""

    def __init__(
        self,
        identities: Mapping[str, IdentityConfig],
        allowance: Allowance,
        *,
        stream: str,
        campaign: str,
        default_timezone: str,
        mailbox_providers: Mapping[str, str],
        last_hand_overs: Mapping[str, datetime],
        wait_seconds: float,
        wait_source: str,
    ) -> None:
        """``last_hand_overs`` are each mailbox's latest hand-over before this run (UTC);
        ``wait_source`` names the config key of ``wait_seconds`` in reasons."""
        self.identities = dict(identities)
        self.order = list(identities)
        self.allowance = allowance
        self.stream = stream
        self.campaign = campaign
        self.mailbox_providers = mailbox_providers
        self.started = clock.now()
        self.wait_seconds = wait_seconds
        self.wait_source = wait_source
        self.waited = 0.0
        """Seconds this run has slept waiting for slots."""
        self._zones = {name: i.timezone or default_timezone for name, i in self.identities.items()}
        self._handed = {name: _aware(at) for name, at in last_hand_overs.items()}
        self._free = {name: self._next_after_hand_over(name) for name in self.order}
        self._picks: Counter[str] = Counter()
        self.unknown_zones: Counter[str] = Counter()
        """Recipient time zone values that name no zone, with how many messages had them."""

    @classmethod
    def for_campaign(
        cls,
        warehouse: Warehouse,
        workspace: WorkspaceConfig,
        campaign: CampaignRef,
        allowance: Allowance,
    ) -> MailboxPool | None:
        """The pool of ``campaign``'s send run, or ``None`` when it does not use one."""
        identities = {n: workspace.identities[n] for n in campaign.config.identities}
        if not needs_pool(campaign, identities):
            return None
        gaps = {n: i.min_gap_seconds for n, i in identities.items() if i.min_gap_seconds}
        return cls(
            identities,
            allowance,
            stream=str(campaign.config.stream),
            campaign=campaign.name,
            default_timezone=workspace.timezone,
            mailbox_providers=mailbox_provider_of(workspace.mailbox_providers),
            last_hand_overs=last_hand_overs(warehouse, campaign.workspace, gaps),
            wait_seconds=campaign.config.max_mailbox_wait_seconds,
            wait_source=f"campaigns.{campaign.name}.max_mailbox_wait_seconds",
        )

    def pick(
        self,
        recipient: str,
        sticky: str | None,
        columns: Mapping[str, object],
    ) -> Slot | MailboxWait:
        """The mailbox and slot of one message, or why it waits and until when.

        ``sticky`` is the mailbox that first wrote to the recipient on this stream;
        ``columns`` is the message's segment row (recipient time zones are read from it).
        Picks depend on the order of calls, not on the message: the sender makes them in
        message key order.
        """
        # Whole seconds: messages due at once share a slot, and so a provider call.
        now = _whole_second_up(clock.now())
        provider = self.mailbox_providers.get(recipient.rpartition("@")[2].lower())
        unknown: set[str] = set()
        if sticky is not None and sticky in self.identities:
            options = [self._option(sticky, now, provider, columns, unknown)]
        else:
            options = [self._option(n, now, provider, columns, unknown) for n in self.order]
        for value in unknown:
            self.unknown_zones[value] += 1
        ready = [o for o in options if o.closes is not None]
        if ready:
            return self._take(min(ready, key=self._rotation_key))
        soonest = min(options, key=lambda o: (o.at, self.order.index(o.identity)))
        if sticky in self.identities:
            reason = f"mailbox {sticky} first wrote to this recipient, who waits for it: "
            reason += soonest.why
        else:
            reason = "no mailbox of the pool can send it in this run: "
            reason += "; ".join(o.why for o in options)
        return MailboxWait(soonest.identity, reason, _naive(soonest.at), soonest.source)

    def cancel(self, slot: Slot) -> None:
        """Give back the slot of a message that will not be sent in this run after all.

        Only the mailbox's latest slot can be given back (a later one was planned after it);
        an earlier one just stays unused, which only widens that mailbox's gap.
        """
        if self._free[slot.identity] == slot.at + self._gap(slot.identity):
            self._free[slot.identity] = slot.previous_free
            self._picks[slot.identity] -= 1

    def due(self, slots: Sequence[Slot]) -> tuple[datetime, list[Slot]]:
        """When one provider call carrying ``slots`` may start, and the slots it would miss.

        The call starts at the latest of now, every slot, and every mailbox's last actual
        hand-over plus its gap. A slot whose mailbox may no longer send it by then (its
        hours or its day closed) is returned to be withdrawn, and the moment is worked out
        again without it.
        """
        kept = list(slots)
        late: list[Slot] = []
        while True:
            start = clock.now()
            for slot in kept:
                start = max(start, slot.at, self._next_after_hand_over(slot.identity))
            missed = [s for s in kept if start >= s.closes]
            if not missed:
                return start, late
            late.extend(missed)
            kept = [s for s in kept if s not in missed]

    def withdrawn(self, slot: Slot) -> MailboxWait:
        """The wait of a message whose slot :meth:`due` found missed."""
        hours = self.identities[slot.identity].send_hours
        earliest = max(slot.closes, self._next_after_hand_over(slot.identity))
        at, _ = open_window(earliest, hours, ZoneInfo(slot.zone))
        source = f"identities.{slot.identity}.send_hours" if hours else self.wait_source
        reason = (
            f"mailbox {slot.identity} could no longer send it in this run (its hours or day "
            f"closed at {_local(slot.closes, slot.zone)} before its turn came); eligible from "
            f"{_local(at, slot.zone)}"
        )
        return MailboxWait(slot.identity, reason, _naive(at), source)

    def handed_over(self, identities: Sequence[str], at: datetime | None = None) -> None:
        """Record that a provider call from ``identities`` ended at ``at``.

        The end of the call, not its start, so that gaps measured between the ledger's
        ``dispatching`` rows hold whatever the call took. The default is a fresh ledger
        stamp (:func:`mailers.clock.stamp`), which is later than every row recorded so far,
        that call's ``dispatching`` rows included, however still the clock stands.
        """
        moment = at or _aware(clock.stamp())
        for name in set(identities):
            self._handed[name] = max(self._handed.get(name, moment), moment)
            self._free[name] = max(self._free[name], self._next_after_hand_over(name))

    def wait(self, moment: datetime, sleep: Sleep, keep_alive: Callable[[], None] | None) -> None:
        """Sleep until ``moment`` (:func:`wait_until`), counting it against the budget."""
        self.waited += wait_until(moment, sleep, keep_alive)

    def _option(
        self,
        name: str,
        now: datetime,
        provider: str | None,
        columns: Mapping[str, object],
        unknown: set[str],
    ) -> _Option:
        identity = self.identities[name]
        zone_name = self._hours_zone(name, columns, unknown)
        zone = ZoneInfo(zone_name)
        hours = identity.send_hours
        usage = Usage(self.stream, self.campaign, name, identity.sending_domain, None, provider)
        room = self.allowance.room(usage, ScopeKind.IDENTITY)
        if isinstance(room, Refusal):
            earliest = max(room.eligible_at.replace(tzinfo=UTC), self._free[name])
            at, _ = open_window(earliest, hours, zone)
            return _Option(name, at, None, zone_name, 0, f"{name}: {room.reason}", room.cap.source)
        earliest = max(now, self._free[name])
        at, closes = open_window(earliest, hours, zone)
        own_zone = ZoneInfo(self._zones[name])
        day_ends = datetime.combine(
            now.astimezone(own_zone).date() + timedelta(days=1), time(), own_zone
        )
        closes = day_ends if closes is None else min(closes, day_ends)
        deadline = now + timedelta(seconds=max(0.0, self.wait_seconds - self.waited))
        if at <= deadline and at < closes:
            return _Option(name, at, closes, zone_name, room)
        if at > earliest:
            source = f"identities.{name}.send_hours"
            why = f"{name} is outside its send hours until {_local(at, zone_name)}"
        elif at >= closes:
            source = self.wait_source
            why = f"{name} is next free at {_local(at, zone_name)}, on its next day"
        else:
            source = f"identities.{name}.min_gap_seconds"
            why = (
                f"{name} is next free at {_local(at, zone_name)} ({source}: "
                f"{self._gap(name).total_seconds():g}s), beyond this run's wait budget "
                f"({self.wait_source}: {self.wait_seconds:g}s, "
                f"{self.wait_seconds - self.waited:g}s left)"
            )
        return _Option(name, at, None, zone_name, room, why, source)

    def _take(self, option: _Option) -> Slot:
        assert option.closes is not None
        name = option.identity
        previous = self._free[name]
        self._free[name] = option.at + self._gap(name)
        self._picks[name] += 1
        return Slot(name, option.at, option.closes, option.zone, previous)

    def _rotation_key(self, option: _Option) -> tuple[datetime, float, int, int]:
        room = math.inf if option.room is None else option.room
        name = option.identity
        return (option.at, -room, self._picks[name], self.order.index(name))

    def _hours_zone(self, name: str, columns: Mapping[str, object], unknown: set[str]) -> str:
        hours = self.identities[name].send_hours
        own = self._zones[name]
        if hours is None or hours.clock != "recipient":
            return own
        value = columns.get(hours.recipient_timezone_column)
        if value is None or not str(value).strip():
            return own
        text = str(value).strip()
        if _zone(text) is None:
            unknown.add(text)
            return own
        return text

    def _gap(self, name: str) -> timedelta:
        return timedelta(seconds=self.identities[name].min_gap_seconds or 0)

    def _next_after_hand_over(self, name: str) -> datetime:
        last = self._handed.get(name)
        return self.started if last is None else last + self._gap(name)


def open_window(
    moment: datetime, hours: SendHours | None, zone: ZoneInfo
) -> tuple[datetime, datetime | None]:
    """The first moment from ``moment`` inside ``hours`` on ``zone``'s clock, and when that
    stretch of hours closes (aware UTC; ``None`` and ``moment`` itself without hours)."""
    if hours is None:
        return moment, None
    local = moment.astimezone(zone)
    days = {_WEEKDAYS.index(day) for day in hours.days}
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        opens = datetime.combine(day, hours.start, zone).astimezone(UTC)
        closes = datetime.combine(day, hours.end, zone).astimezone(UTC)
        if moment < closes:
            return max(moment, opens), closes
    raise AssertionError(f"send hours {hours} open on no day of a week")


def last_hand_overs(
    warehouse: Warehouse, workspace: str, gaps: Mapping[str, float]
) -> dict[str, datetime]:
    """The latest hand-over (``dispatching`` row, naive UTC) of each mailbox in ``gaps``.

    Only the last ``gap`` seconds of the ledger matter to a mailbox, so the query reads no
    further back than the longest gap.
    """
    if not gaps:
        return {}
    since = clock.utcnow() - timedelta(seconds=max(gaps.values()))
    names = ", ".join(sql_text(n) for n in sorted(gaps))
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    rows = warehouse.query(
        f"""
        select identity, max(recorded_at) as last from {ledger}
        where workspace = {sql_text(workspace)}
          and status = {sql_text(LedgerStatus.DISPATCHING)}
          and identity in ({names})
          and recorded_at >= cast({sql_text(since.isoformat(sep=" "))} as timestamp)
        group by identity
        """
    ).to_pylist()
    return {row["identity"]: row["last"] for row in rows}


def wait_until(moment: datetime, sleep: Sleep, keep_alive: Callable[[], None] | None) -> float:
    """Sleep until ``moment`` in slices of at most :data:`WAIT_SLICE_SECONDS`, calling
    ``keep_alive`` after each; returns the seconds slept.

    The wait is worked out once, so a sleep that does not move Mailers' clock still ends.
    """
    remaining = (moment - clock.now()).total_seconds()
    slept = 0.0
    while remaining > 0:
        step = min(remaining, WAIT_SLICE_SECONDS)
        sleep(step)
        slept += step
        remaining -= step
        if keep_alive is not None:
            keep_alive()
    return slept


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _whole_second_up(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _local(moment: datetime, zone: str) -> str:
    return f"{moment.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M:%S} {zone}"
