"""Assigning one message to a provider account within the day's caps, or deferring it.

For each message, in its routing chain (:mod:`mailers.routing`), the first account that
is available and whose caps have room takes it, and the capacity is reserved
(:class:`~mailers.allowance.Allowance`). A cap of a wider scope (workspace, stream,
campaign, sending domain, identity) that is full defers the message whatever the account;
an account that is full is passed over (*overflow*) and the message is deferred only when
every account of its chain is full. Sends and dry runs (``mailers plan``) both assign
through :class:`Assigner`, so the plan shows what a send would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from mailers.allowance import Allowance, Refusal, Reservation
from mailers.caps import Usage
from mailers.routing import RouteChoice, Router


@dataclass(frozen=True)
class Assigned:
    """The message goes through ``account``; ``reservation`` holds its capacity."""

    account: str
    route: str
    reservation: Reservation


@dataclass(frozen=True)
class Deferred:
    """A cap is full today: the message waits until ``eligible_at`` (naive UTC)."""

    reason: str
    eligible_at: datetime
    route: str | None
    refusal: Refusal


@dataclass(frozen=True)
class Stranded:
    """No account of the chain is available (down), so nothing can take it now."""

    reason: str
    route: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """What routing and caps need to know about one message."""

    message_key: str
    address: str
    stream: str
    campaign: str
    identity: str
    sending_domain: str
    sticky_account: str | None = None


Assignment = Assigned | Deferred | Stranded


class Assigner:
    """Routes messages of one campaign send under its caps."""

    def __init__(
        self,
        router: Router,
        allowance: Allowance,
        mailbox_providers: Mapping[str, str],
    ) -> None:
        """``mailbox_providers`` maps a recipient domain to its mailbox provider."""
        self.router = router
        self.allowance = allowance
        self.mailbox_providers = mailbox_providers

    def mailbox_provider(self, address: str) -> str | None:
        """The mailbox provider of an address's domain, if the workspace names one."""
        return self.mailbox_providers.get(address.rpartition("@")[2].lower())

    def assign(self, message: Recipient, down: Mapping[str, str]) -> Assignment:
        """Reserve an account for ``message`` or say why none takes it now.

        ``down`` maps the accounts that cannot take anything now to why (a failure earlier
        in the run, an open circuit breaker).
        """
        candidates = self.router.candidates(
            message.message_key, message.address, message.sticky_account
        )
        provider = self.mailbox_provider(message.address)
        passed: list[tuple[str, str]] = []
        full: list[Refusal] = []
        for candidate in candidates:
            why = down.get(candidate.account)
            if why is None:
                verdict = self.allowance.take(
                    Usage(
                        stream=message.stream,
                        campaign=message.campaign,
                        identity=message.identity,
                        sending_domain=message.sending_domain,
                        provider_account=candidate.account,
                        mailbox_provider=provider,
                    )
                )
                if isinstance(verdict, Reservation):
                    choice = RouteChoice(candidate.account, candidate.rule, tuple(passed))
                    return Assigned(candidate.account, choice.reason, verdict)
                if not verdict.account_only:
                    return Deferred(verdict.reason, verdict.eligible_at, None, verdict)
                full.append(verdict)
                why = f"is full ({verdict.cap.source})"
            passed.append((candidate.account, why))
        first_rule = candidates[0].rule if candidates else "no account routed"
        route = RouteChoice(None, first_rule, tuple(passed)).reason
        if full:
            soonest = min(full, key=lambda r: r.eligible_at)
            reason = "every routed account is full today: " + "; ".join(r.reason for r in full)
            return Deferred(reason, soonest.eligible_at, route, soonest)
        reason = "no provider account available: " + "; ".join(f"{a}: {w}" for a, w in passed)
        return Stranded(reason, route)
