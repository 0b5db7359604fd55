"""The circuit breakers of one send run: gate calls, count waves, audit every transition.

:class:`BreakerBoard` holds a :class:`~mailers.breaker.CircuitBreaker` per provider account
the run may use and writes each transition to the audit log (action ``breaker``;
``detail`` holds the ``account``, ``from_state``/``to_state``, the ``trigger`` and the
evidence: ``consecutive_failures``, ``window_calls``, ``window_failures``, ``error_rate``,
``last_failure``, ``opened_at``, ``opened_because``, ``probe_at`` and the ``thresholds``).
:meth:`BreakerBoard.load` restores each account's state from its latest transition (one
query, one row per account), so an account a previous run opened stays open until its
``open_seconds`` pass, then probes. Counts of a closed breaker are not kept between runs:
each run starts its window empty.

Wiring it into a send::

    board = BreakerBoard.load(warehouse, "acme", {name: cfg.breaker, ...}, AuditContext(...))
    if not board.available(account):      # route around it; board.why(account) says why
        ...
    provider.send_batch(chunk, board.journal(account, LedgerJournal(...)))

:meth:`BreakerBoard.journal` wraps any :class:`~mailers.providers.DispatchJournal`: before
each wave it calls :meth:`BreakerBoard.gate`, which raises
:class:`~mailers.providers.AccountUnavailable` when the breaker refuses the call (the
provider then reports the batch's remaining messages ``not_sent`` with
``account_unavailable`` and that reason, and they fail over), and after the wave's
``answered`` it calls :meth:`BreakerBoard.observe`. A journal of one's own calls the same
three methods: ``gate`` first thing in ``handing_over``, ``release`` if the call is then
not made after all, and ``observe`` from the ``answered`` of a wave that was handed over
(never from the closing ``answered`` of messages that never left).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailers.audit import AUDIT_TABLE, AuditAction, AuditRecord, append_audit
from mailers.breaker import BreakerState, CircuitBreaker, Transition, judge_wave
from mailers.messages import OutboundMessage, SendResult
from mailers.policy_config import BreakerConfig
from mailers.providers import AccountUnavailable, DispatchJournal
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


@dataclass(frozen=True)
class AuditContext:
    """The run the board's audit records belong to."""

    run_id: str
    actor: str
    config_hash: str
    stream: str | None = None
    campaign: str | None = None
    send_window: str | None = None


class BreakerBoard:
    """The breakers of the accounts one send run may use; see the module docstring."""

    def __init__(
        self,
        warehouse: Warehouse,
        workspace: str,
        breakers: Mapping[str, CircuitBreaker],
        run: AuditContext,
    ) -> None:
        self.warehouse = warehouse
        self.workspace = workspace
        self.breakers = dict(breakers)
        self.run = run
        self._lock = threading.RLock()

    @classmethod
    def load(
        cls,
        warehouse: Warehouse,
        workspace: str,
        accounts: Mapping[str, BreakerConfig],
        run: AuditContext,
    ) -> BreakerBoard:
        """A board whose breakers start where each account's latest transition left them."""
        latest = latest_transitions(warehouse, workspace, list(accounts))
        breakers = {
            name: _restored(name, config, latest.get(name)) for name, config in accounts.items()
        }
        return cls(warehouse, workspace, breakers, run)

    def available(self, account: str) -> bool:
        """Whether ``account`` may take a call now (an open breaker past its
        ``open_seconds`` half-opens here, and then admits one probe)."""
        with self._lock:
            breaker = self._breaker(account)
            self._write(breaker.refresh())
            return breaker.available()

    def why(self, account: str) -> str:
        """``account``'s breaker state in words, with the evidence."""
        with self._lock:
            return self._breaker(account).why()

    def gate(self, account: str) -> None:
        """Admit one call of ``account`` or raise :class:`AccountUnavailable` saying why."""
        with self._lock:
            breaker = self._breaker(account)
            self._write(breaker.refresh())
            if not breaker.start_call():
                raise AccountUnavailable(breaker.why())

    def release(self, account: str) -> None:
        """A call :meth:`gate` admitted was not made after all."""
        with self._lock:
            self._breaker(account).release()

    def observe(self, account: str, results: Sequence[SendResult]) -> None:
        """Count one wave's results (:func:`judge_wave`) and record what that changes."""
        outcome, reason = judge_wave(results)
        with self._lock:
            self._write(self._breaker(account).end_call(outcome, reason))

    def journal(self, account: str, inner: DispatchJournal) -> BreakerJournal:
        """``inner`` behind ``account``'s breaker (see :class:`BreakerJournal`)."""
        return BreakerJournal(self, account, inner)

    def _breaker(self, account: str) -> CircuitBreaker:
        try:
            return self.breakers[account]
        except KeyError:
            known = ", ".join(sorted(self.breakers)) or "none"
            raise KeyError(
                f"no circuit breaker for provider account {account!r} in workspace "
                f"{self.workspace!r} (this run's accounts: {known})"
            ) from None

    def _write(self, transition: Transition | None) -> None:
        if transition is None:
            return
        record = AuditRecord(
            run_id=self.run.run_id,
            actor=self.run.actor,
            action=AuditAction.BREAKER,
            config_hash=self.run.config_hash,
            detail=transition.detail(),
            workspace=self.workspace,
            stream=self.run.stream,
            campaign=self.run.campaign,
            send_window=self.run.send_window,
            scope=f"account:{self.workspace}.{transition.account}",
            reason=transition.trigger,
            before={"state": str(transition.from_state)},
            after={"state": str(transition.to_state)},
        )
        append_audit(self.warehouse, [record])


class BreakerJournal:
    """A :class:`~mailers.providers.DispatchJournal` that puts one account's breaker in
    front of another journal: each wave is gated before ``inner`` records it, and counted
    once ``inner`` has recorded its answer."""

    def __init__(self, board: BreakerBoard, account: str, inner: DispatchJournal) -> None:
        self.board = board
        self.account = account
        self.inner = inner
        self._in_flight = False

    def handing_over(
        self, messages: Sequence[OutboundMessage], idempotency_keys: Mapping[str, str]
    ) -> None:
        self.board.gate(self.account)
        try:
            self.inner.handing_over(messages, idempotency_keys)
        except BaseException:
            self.board.release(self.account)
            raise
        self._in_flight = True

    def answered(self, results: Sequence[SendResult]) -> None:
        # Only a wave that was handed over is a call: the closing answer for messages that
        # never left (the account gave up, or this breaker refused) says nothing new.
        wave, self._in_flight = self._in_flight, False
        try:
            self.inner.answered(results)
        finally:
            if wave:
                self.board.observe(self.account, results)


def latest_transitions(
    warehouse: Warehouse, workspace: str, accounts: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Account → the ``detail`` of its latest breaker transition in ``workspace`` (accounts
    without one are absent); one query, at most one row per account."""
    if not accounts:
        return {}
    account = warehouse.dialect.json_text("detail", "account")
    marks = ", ".join("?" for _ in accounts)
    table = warehouse.query(
        f"""
        select account, detail from (
            select {account} as account, detail,
                   row_number() over (
                       partition by {account} order by recorded_at desc, audit_id desc
                   ) as recency
            from {warehouse.relation(MAILERS_SCHEMA, AUDIT_TABLE)}
            where action = ? and workspace = ? and {account} in ({marks})
        ) as transitions
        where recency = 1
        """,
        [str(AuditAction.BREAKER), workspace, *accounts],
    )
    return {row["account"]: json.loads(row["detail"]) for row in table.to_pylist()}


def _restored(
    account: str, config: BreakerConfig, detail: Mapping[str, Any] | None
) -> CircuitBreaker:
    """A breaker in the state ``detail`` (its latest transition) left it in."""
    if detail is None:
        return CircuitBreaker(account, config)
    state = BreakerState(detail["to_state"])
    if state == BreakerState.CLOSED:
        return CircuitBreaker(account, config)
    return CircuitBreaker(
        account,
        config,
        state=state,
        opened_at=datetime.fromisoformat(detail["opened_at"]),
        opened_because=detail.get("opened_because"),
        last_failure=detail.get("last_failure"),
        consecutive_failures=int(detail.get("consecutive_failures") or 0),
    )
