"""Automatic pauses: hard-bounce and complaint rates per scope, judged over windows.

For each workspace with ``pause_rules`` (:mod:`mailers.rules_config`), each window (default
1 h and 24 h) and each rate:

* the **volume** of a scope is the messages it handed over and the provider accepted in
  the window (``accepted`` ledger rows recorded since the window's start);
* its **hard bounces** (**complaints**) are those of these messages with at least one hard
  bounce (complaint) event, from the warehouse's events *and* the events that have landed
  but are not loaded yet (:class:`~mailers.feedback.LandedFeedback`), so a bounce storm
  during a long send is seen before the send ends; the rate is their share of the volume;
* a scope is judged only with at least ``min_volume`` messages; at or over ``pause`` it
  **trips** (an automatic pause of the scope, with its evidence), at or over ``warn`` it
  **warns** (an alert, nothing held).

Scopes judged: streams, identities and provider accounts of the workspace. A rule trips the
*narrowest* scopes that explain the rate: scopes over the level are taken smallest volume
first, each only if what it sent outside the scopes already taken is still over; a scope
whose every message is in two or more taken scopes inside it takes their place (when all
the identities of a stream trip, the stream does); then a taken scope whose rate outside
the *other* taken ones is not over is dropped (an account that is over only because one
stream it carries is, stays open for the other streams). Of scopes that sent exactly the
same messages, the stream is taken before the identity, and that before the account.
Messages already held by an active pause do not count again, and a message accepted
before a person resumed a scope covering it is forgiven (else the same window would trip
again the moment it is resumed).

:func:`evaluate` returns the findings, :func:`apply` writes the pauses
(:meth:`~mailers.pauses.PauseBoard.pause`, ``automatic=True``) and alerts;
:class:`LiveRules` does both before each batch of a running send, cheaply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

import pyarrow as pa

from mailers.alerts import Alerter
from mailers.clock import utcnow
from mailers.config import Settings
from mailers.control import ControlKind
from mailers.current_events import current_events_sql
from mailers.events import EVENTS_SCHEMA, BounceClass, EventType
from mailers.feedback import LandedFeedback
from mailers.ingest import ParserFor
from mailers.ledger import LEDGER_TABLE, LedgerStatus, sql_text
from mailers.pauses import PAUSES_TABLE, Pause, PauseBoard, PauseLevel, PauseScope
from mailers.rules_config import PauseRulesConfig, RuleLevel
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

ACTOR = "rule:pause_rules"
"""Who an automatic pause is recorded as paused by."""

EVENT_SKEW = timedelta(hours=1)
"""How much earlier than its message's acceptance an event may be stamped (clock skew
between Mailers and a provider) and still be read."""

Alert = Callable[[int, str, Mapping[str, Any]], object]
"""An alert hook: (logging level, one-line message, JSON-able payload)."""

log = logging.getLogger(__name__)


class Metric(StrEnum):
    """The rates the rules judge."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"

    @property
    def label(self) -> str:
        return self.replace("_", " ")


_LEVELS = {
    RuleLevel.STREAM: PauseLevel.STREAM,
    RuleLevel.IDENTITY: PauseLevel.IDENTITY,
    RuleLevel.ACCOUNT: PauseLevel.ACCOUNT,
}


@dataclass(frozen=True)
class Finding:
    """A scope's rate at or over a level, with the numbers that show it.

    ``bad`` and ``volume`` are what decided (the scope's messages outside the other scopes
    a rule took); ``scope_bad`` and ``scope_volume`` the whole scope's in the window.
    """

    severity: ClassVar[str]
    scope: PauseScope
    metric: Metric
    window_hours: float
    bad: int
    volume: int
    threshold: float
    scope_bad: int
    scope_volume: int
    window_start: datetime
    evaluated_at: datetime
    landed_events: int
    sql: str = field(repr=False)

    @property
    def rate(self) -> float:
        return self.bad / self.volume if self.volume else 0.0

    @property
    def key(self) -> str:
        """One finding of this kind per scope, metric and window: for deduplicating alerts."""
        return f"{self.severity}|{self.metric}|{self.window_hours:g}|{self.scope.key}"

    def describe(self) -> str:
        """``hard bounce 5.1% of 412 in 1h >= 4%``."""
        return (
            f"{self.metric.label} {_percent(self.rate)} of {self.volume} in "
            f"{self.window_hours:g}h >= {_percent(self.threshold)}"
        )

    def evidence(self) -> dict[str, Any]:
        """The numbers, the window and the query that found them, as JSON-able values."""
        return {
            "severity": self.severity,
            "scope": self.scope.key,
            "metric": str(self.metric),
            "window_hours": self.window_hours,
            "window_start": self.window_start.isoformat(),
            "evaluated_at": self.evaluated_at.isoformat(),
            "bad": self.bad,
            "volume": self.volume,
            "rate": self.rate,
            "threshold": self.threshold,
            "scope_bad": self.scope_bad,
            "scope_volume": self.scope_volume,
            "landed_events_read": self.landed_events,
            "sql": self.sql,
        }


@dataclass(frozen=True)
class Trip(Finding):
    """A rate at or over the pause level: the scope is paused automatically."""

    severity: ClassVar[str] = "pause"


@dataclass(frozen=True)
class RateWarning(Finding):
    """A rate at or over the warning level (below the pause level): alerted, not held."""

    severity: ClassVar[str] = "warn"


def _percent(rate: float) -> str:
    return f"{rate * 100:.3g}%"


@dataclass(frozen=True)
class _Cell:
    """Messages of one (stream, campaign, identity, account) and their bad ones, by window."""

    stream: str
    campaign: str
    identity: str | None
    account: str | None
    volume: tuple[int, ...]
    bad: Mapping[Metric, tuple[int, ...]]

    def value(self, level: PauseLevel) -> str | None:
        return {
            PauseLevel.STREAM: self.stream,
            PauseLevel.IDENTITY: self.identity,
            PauseLevel.ACCOUNT: self.account,
        }[level]

    def held_by(self, scope: PauseScope) -> bool:
        return scope.covers(
            scope.workspace, self.stream, self.campaign, self.identity, self.account
        )


RESUMES_SCHEMA = pa.schema(
    [
        pa.field("level", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("resumed_at", pa.timestamp("us"), nullable=False),
    ]
)


def resumed_at(warehouse: Warehouse, board: PauseBoard) -> dict[str, datetime]:
    """When each scope was last resumed (``scope.key`` → time), loaded or still pending."""
    pauses = warehouse.relation(MAILERS_SCHEMA, PAUSES_TABLE)
    rows = warehouse.query(
        f"select scope, max(recorded_at) as at from {pauses} where action = "
        f"{sql_text(ControlKind.RESUME)} group by scope"
    ).to_pylist()
    latest = {row["scope"]: row["at"] for row in rows}
    for record in board.journal.pending():
        if record.kind is ControlKind.RESUME:
            key = record.body["scope"]
            latest[key] = max(latest.get(key, record.recorded_at), record.recorded_at)
    return latest


def cells_sql(
    warehouse: Warehouse,
    workspace: str,
    windows: Sequence[datetime],
    landed: str,
    resumes: str,
) -> str:
    """The set-based query of the rules: per (stream, campaign, identity, account), the
    messages accepted since each window's start and how many of them hard-bounced or
    complained (columns ``volume_<i>``, ``hard_bounce_<i>``, ``complaint_<i>``).

    Events are tied to messages as :func:`~mailers.ledger.attributed_events_sql` ties them
    (their own ``message_key``, else a provider message id exactly one message of the
    account carries), but only to the messages accepted in the longest window, so the
    query reads the window's ledger rows and events, never the whole history.
    """
    ledger = warehouse.relation(MAILERS_SCHEMA, LEDGER_TABLE)
    earliest = min(windows)
    columns = ", ".join(EVENTS_SCHEMA.names)
    stored = current_events_sql(
        warehouse,
        f"event_type in ({sql_text(EventType.BOUNCED)}, {sql_text(EventType.COMPLAINED)}) "
        f"and occurred_at >= {_timestamp(earliest - EVENT_SKEW)}",
    )
    feedback = (
        f"(select {columns} from {stored} as stored union all select {columns} from {landed})"
    )
    hard = f"event_type = {sql_text(EventType.BOUNCED)} and bounce_class = " + sql_text(
        BounceClass.HARD
    )
    sums = []
    for i, start in enumerate(windows):
        since = f"a.accepted_at >= {_timestamp(start)}"
        sums.append(f"sum(case when {since} then 1 else 0 end) as volume_{i}")
        for metric in Metric:
            sums.append(
                f"sum(case when {since} and b.{metric} = 1 then 1 else 0 end) as {metric}_{i}"
            )
    return f"""
with accepted as (
    select message_key, stream, campaign, identity, provider, provider_account,
        provider_message_id, accepted_at
    from (
        select message_key, stream, campaign, identity, provider, provider_account,
            provider_message_id, recorded_at as accepted_at,
            row_number() over (partition by message_key order by recorded_at) as nth
        from {ledger}
        where workspace = {sql_text(workspace)}
            and status = {sql_text(LedgerStatus.ACCEPTED)}
            and recorded_at >= {_timestamp(earliest)}
    ) as rows
    where nth = 1
),
judged as (
    select * from accepted as a
    where not exists (
        select 1 from {resumes} as r
        where r.resumed_at > a.accepted_at and (
            r.level = 'workspace'
            or (r.level = 'stream' and r.name = a.stream)
            or (r.level = 'campaign' and r.name = a.campaign)
            or (r.level = 'identity' and r.name = a.identity)
            or (r.level = 'account' and r.name = a.provider_account)
        )
    )
),
provider_message_ids as (
    select provider, provider_account, provider_message_id, min(message_key) as message_key
    from judged
    where provider_message_id is not null
    group by provider, provider_account, provider_message_id
    having count(distinct message_key) = 1
),
attributed as (
    select f.event_type, f.bounce_class, coalesce(f.message_key, ids.message_key) as message_key
    from {feedback} as f
    left join provider_message_ids as ids
        on f.message_key is null
        and ids.provider = f.provider
        and ids.provider_account = f.provider_account
        and ids.provider_message_id = f.provider_message_id
),
bad as (
    select message_key,
        max(case when {hard} then 1 else 0 end) as {Metric.HARD_BOUNCE},
        max(case when event_type = {sql_text(EventType.COMPLAINED)} then 1 else 0 end)
            as {Metric.COMPLAINT}
    from attributed
    where message_key in (select message_key from judged)
    group by message_key
)
select a.stream, a.campaign, a.identity, a.provider_account as account, {", ".join(sums)}
from judged as a
left join bad as b on b.message_key = a.message_key
group by a.stream, a.campaign, a.identity, a.provider_account
order by 1, 2, 3, 4"""


def _timestamp(moment: datetime) -> str:
    return f"cast({sql_text(moment.isoformat(sep=' '))} as timestamp)"


def evaluate(
    warehouse: Warehouse,
    workspace: str,
    rules: PauseRulesConfig,
    *,
    landed: pa.Table | None = None,
    paused: Iterable[PauseScope] = (),
    resumed: Mapping[str, datetime] | None = None,
) -> list[Trip | RateWarning]:
    """The trips and warnings of one workspace's rules now (:func:`mailers.clock.utcnow`).

    ``landed``: events landed but not loaded (:attr:`LandedFeedback.table`); ``paused``:
    scopes held now (their messages do not count again); ``resumed``: when scopes were last
    resumed (:func:`resumed_at`). Trips come first, then warnings.
    """
    if not rules.enabled:
        return []
    now = utcnow()
    hours_of = sorted(rules.window_hours)  # shortest first: a longer window adds to it
    windows = [now - timedelta(hours=h) for h in hours_of]
    landed_table = (landed if landed is not None else EVENTS_SCHEMA.empty_table()).select(
        EVENTS_SCHEMA.names
    )
    resumes = pa.Table.from_pylist(
        [
            {"level": str(s.level), "name": s.name, "resumed_at": at}
            for key, at in (resumed or {}).items()
            if (s := PauseScope.from_key(key)).workspace == workspace
        ],
        schema=RESUMES_SCHEMA,
    )
    with warehouse.staged(landed_table) as landed_name, warehouse.staged(resumes) as resumes_name:
        sql = cells_sql(warehouse, workspace, windows, landed_name, resumes_name)
        rows = warehouse.query(sql).to_pylist()
        shown = sql.replace(landed_name, "landed_feedback").replace(resumes_name, "resumes")
    cells = [
        _Cell(
            stream=row["stream"],
            campaign=row["campaign"],
            identity=row["identity"],
            account=row["account"],
            volume=tuple(int(row[f"volume_{i}"]) for i in range(len(windows))),
            bad={m: tuple(int(row[f"{m}_{i}"]) for i in range(len(windows))) for m in Metric},
        )
        for row in rows
    ]
    judge = _Judge(workspace, cells, [_LEVELS[level] for level in rules.levels], rules.min_volume)
    held = [s for s in paused if s.workspace == workspace]
    findings: list[Trip | RateWarning] = []
    for severity in (Trip, RateWarning):
        # A trip holds its scope for every rate; a warning holds nothing, so it only
        # explains the same rate over a longer window.
        trips = [f.scope for f in findings]
        for metric in Metric:
            taken = [*held, *trips]
            for i, hours in enumerate(hours_of):
                threshold = getattr(getattr(rules, metric), severity.severity)
                found = judge.over(metric, i, threshold, taken)
                for scope, decided, whole in found:
                    findings.append(
                        severity(
                            scope=scope,
                            metric=metric,
                            window_hours=hours,
                            bad=decided[0],
                            volume=decided[1],
                            threshold=threshold,
                            scope_bad=whole[0],
                            scope_volume=whole[1],
                            window_start=windows[i],
                            evaluated_at=now,
                            landed_events=landed_table.num_rows,
                            sql=shown,
                        )
                    )
                taken += [scope for scope, _, _ in found]
                if severity is Trip:
                    trips += [scope for scope, _, _ in found]
    return findings


class _Judge:
    """The narrowest scopes over a level, for one workspace's cells."""

    def __init__(
        self, workspace: str, cells: list[_Cell], levels: list[PauseLevel], min_volume: int
    ) -> None:
        self.cells = cells
        self.min_volume = min_volume
        self.members: dict[PauseScope, frozenset[int]] = {}
        for index, cell in enumerate(cells):
            for level in levels:
                name = cell.value(level)
                if name is not None:
                    scope = PauseScope(workspace, level, name)
                    self.members[scope] = self.members.get(scope, frozenset()) | {index}
        self.rank = {level: rank for rank, level in enumerate(PauseLevel)}

    def over(
        self, metric: Metric, window: int, threshold: float, taken: Sequence[PauseScope]
    ) -> list[tuple[PauseScope, tuple[int, int], tuple[int, int]]]:
        """Scopes over ``threshold`` in ``window`` that the ``taken`` ones do not explain,
        with (bad, volume) outside the others chosen and (bad, volume) of the whole scope.

        Smallest first, a scope is chosen when its messages outside those chosen (and
        ``taken``) are still over; a scope whose every open message is in two or more chosen
        scopes inside it replaces them (all its parts tripped: the scope itself did); last,
        a chosen scope not over outside the other chosen ones is dropped.
        """

        def tally(indices: Iterable[int]) -> tuple[int, int]:
            bad = volume = 0
            for index in indices:
                bad += self.cells[index].bad[metric][window]
                volume += self.cells[index].volume[window]
            return bad, volume

        def outside(scope: PauseScope, others: Iterable[PauseScope]) -> list[int]:
            excluded = list(others)
            return [
                i
                for i in sorted(self.members[scope])
                if not any(self.cells[i].held_by(o) for o in excluded)
            ]

        def rest(scope: PauseScope, others: Iterable[PauseScope]) -> tuple[int, int]:
            return tally(outside(scope, others))

        def is_over(numbers: tuple[int, int]) -> bool:
            bad, volume = numbers
            # A rate exactly at the level is over it, whatever the float rounding.
            return volume > 0 and bad >= threshold * volume - 1e-9

        whole = {scope: tally(indices) for scope, indices in self.members.items()}
        candidates = sorted(
            (s for s, n in whole.items() if n[1] >= self.min_volume and is_over(n)),
            key=lambda s: (whole[s][1], self.rank[s.level], s),
        )
        chosen: list[PauseScope] = []
        for scope in candidates:
            if is_over(rest(scope, [*taken, *chosen])):
                chosen.append(scope)
        for wide in candidates:
            if wide in chosen:
                continue
            inside = [s for s in chosen if self.members[s] <= self.members[wide]]
            parts = frozenset().union(*(self.members[s] for s in inside))
            if len(inside) >= 2 and set(outside(wide, taken)) <= parts:
                chosen = [s for s in chosen if s not in inside] + [wide]
        for scope in sorted(chosen, key=lambda s: (-whole[s][1], s)):
            if not is_over(rest(scope, [*taken, *(o for o in chosen if o != scope)])):
                chosen.remove(scope)
        return [(s, rest(s, [*taken, *(o for o in chosen if o != s)]), whole[s]) for s in chosen]


def apply(
    findings: Sequence[Trip | RateWarning], board: PauseBoard, config_hash: str, alert: Alert
) -> list[Pause]:
    """Pause each tripped scope automatically (one pause per scope, every finding of it as
    evidence), alert on new pauses (ERROR) and on warnings (WARNING); return the new pauses.

    A scope already paused keeps its pause and is not alerted again.
    """
    trips: dict[PauseScope, list[Trip]] = {}
    for finding in findings:
        if isinstance(finding, Trip):
            trips.setdefault(finding.scope, []).append(finding)
    new: list[Pause] = []
    for scope, found in trips.items():
        pause, created = board.pause(
            scope,
            actor=ACTOR,
            reason=found[0].describe(),
            config_hash=config_hash,
            automatic=True,
            evidence={"findings": [f.evidence() for f in found]},
        )
        if created:
            new.append(pause)
            alert(logging.ERROR, pause_line(pause), _payload("pause", found))
    for finding in findings:
        if isinstance(finding, RateWarning):
            message = f"warning: {finding.scope} {finding.describe()} (warn level)"
            alert(logging.WARNING, message, _payload("warn", [finding]))
    return new


def pause_line(pause: Pause) -> str:
    """``paused: stream acme.lifecycle automatically (hard bounce 5.1% of 412 in 1h >= 4%);
    resume: mailers resume stream:acme.lifecycle --reason ...``."""
    return (
        f"paused: {pause.scope} automatically ({pause.reason}); "
        f"resume: mailers resume {pause.scope.key} --reason ..."
    )


def _payload(severity: str, findings: Sequence[Finding]) -> dict[str, Any]:
    first = findings[0]
    return {
        "severity": severity,
        "workspace": first.scope.workspace,
        "scope": first.scope.key,
        "findings": [{k: v for k, v in f.evidence().items() if k != "sql"} for f in findings],
    }


@dataclass
class RulesOutcome:
    """What one evaluation of every workspace found and paused."""

    findings: list[Trip | RateWarning] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)


def run_rules(
    warehouse: Warehouse,
    settings: Settings,
    board: PauseBoard,
    feedback: LandedFeedback | None = None,
    *,
    alerted: set[str] | None = None,
    alert_for: Callable[[str], Alert] | None = None,
) -> RulesOutcome:
    """Evaluate every workspace's rules and apply them.

    ``alerted``: keys of warnings already alerted (updated), so a warning that persists is
    alerted once, and again only after it cleared; ``alert_for(workspace)``: the alert
    hook (default: :class:`Alerter` with the workspace's webhook).
    """
    warnings: set[str] = set()
    outcome = RulesOutcome()
    landed = feedback.table if feedback is not None else None
    resumed = resumed_at(warehouse, board)
    paused = [p.scope for p in board.active().values()]
    for name, workspace in settings.config.workspaces.items():
        rules = workspace.pause_rules
        if not rules.enabled:
            continue
        findings = evaluate(warehouse, name, rules, landed=landed, paused=paused, resumed=resumed)
        warnings.update(f.key for f in findings if isinstance(f, RateWarning))
        if alerted is not None:
            findings = [f for f in findings if isinstance(f, Trip) or f.key not in alerted]
        alert = alert_for(name) if alert_for else Alerter(rules.alert_webhook)
        outcome.findings += findings
        outcome.pauses += apply(findings, board, settings.config_hash, alert)
        paused += [p.scope for p in outcome.pauses]
    if alerted is not None:
        alerted.clear()  # a warning that cleared is alerted again when it comes back
        alerted.update(warnings)
    return outcome


class LiveRules:
    """The rules during a running send: call :meth:`check` before each batch.

    Each check lists the landing zone (new files are parsed once); the rules are evaluated
    only when new hard bounces or complaints landed, or ``recheck_seconds`` (the smallest
    of the workspaces') passed on Mailers' clock since the last evaluation. A warning is
    alerted once while it lasts.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        settings: Settings,
        board: PauseBoard,
        parser_for: ParserFor,
        *,
        alert_for: Callable[[str], Alert] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.settings = settings
        self.board = board
        self.feedback = LandedFeedback(warehouse, settings.landing_dir, parser_for)
        self.alert_for = alert_for
        self.alerted: set[str] = set()
        self.evaluations = 0
        enabled = [w.pause_rules for w in settings.config.workspaces.values()]
        self.enabled = any(r.enabled for r in enabled)
        self.recheck = timedelta(
            seconds=min((r.recheck_seconds for r in enabled if r.enabled), default=60.0)
        )
        self._last: datetime | None = None

    def check(self) -> list[Pause]:
        """The automatic pauses this check wrote (usually none)."""
        if not self.enabled:
            return []
        landed = self.feedback.poll()
        now = utcnow()
        if not landed and self._last is not None and now - self._last < self.recheck:
            return []
        self._last = now
        self.evaluations += 1
        outcome = run_rules(
            self.warehouse,
            self.settings,
            self.board,
            self.feedback,
            alerted=self.alerted,
            alert_for=self.alert_for,
        )
        return outcome.pauses
