"""Routing policy: which provider account sends a message, and why.

A message's *chain* is the accounts to try, first choice first, built from three rules:

1. ``sticky``: the account that first sent to this recipient on this stream (recorded in
   :mod:`mailers.affinity`), when the stream is sticky and that account is still routed;
2. ``domain_routes``: the first route whose domains (or mailbox provider) match the
   recipient's domain names accounts to try next;
3. the strategy: ``failover`` tries the accounts in configured order; ``weighted`` draws
   the first from a hash of the message key in proportion to the weights (so a re-run
   routes the same way), then the rest by descending weight.

An account is skipped while it is unavailable (its circuit breaker is open, or it failed
earlier in the run) or full (its daily cap or warm-up curve is reached): the message falls
back (or overflows) to the next account in its chain. :class:`RouteChoice` says which rule
chose the account and which accounts were passed over and why; the ledger records it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from itertools import accumulate

from mailers.config import FailoverRouting, RoutingConfig, WeightedRouting
from mailers.keys import bucket


@dataclass(frozen=True)
class Candidate:
    """One account of a message's chain and the rule that put it there."""

    account: str
    rule: str


@dataclass(frozen=True)
class RouteChoice:
    """The account chosen for a message (``None``: none can take it) and why."""

    account: str | None
    rule: str
    passed_over: tuple[tuple[str, str], ...] = ()
    """Accounts ahead of the chosen one in the chain, each with why it was passed over."""

    @property
    def reason(self) -> str:
        """The ledger's ``route``: the rule, then each fallback with its cause."""
        if not self.passed_over:
            return self.rule
        skipped = "; ".join(f"{account} {why}" for account, why in self.passed_over)
        return f"{self.rule}; passed over {skipped}"


class Router:
    """Applies one stream's routing policy."""

    def __init__(
        self, policy: RoutingConfig, mailbox_providers: Mapping[str, list[str]] | None = None
    ) -> None:
        self.policy = policy
        self._domains: dict[str, str] = {
            d.lower(): name for name, domains in (mailbox_providers or {}).items() for d in domains
        }
        if isinstance(policy, WeightedRouting):
            names = list(policy.weights)
            total = sum(policy.weights.values())
            self._names = names
            self._bounds = [edge / total for edge in accumulate(policy.weights.values())]
            self._by_weight = sorted(names, key=lambda n: (-policy.weights[n], names.index(n)))

    @property
    def accounts(self) -> list[str]:
        """Every account this policy may route to."""
        return self.policy.all_accounts

    def chain(self, message_key: str) -> list[str]:
        """The strategy's accounts for one message, first choice first (no other rule)."""
        return [c.account for c in self._strategy(message_key)]

    def route(self, message_key: str, down: Collection[str] = ()) -> str | None:
        """The first account of the strategy's chain that is not down, or ``None``."""
        return next((a for a in self.chain(message_key) if a not in down), None)

    def candidates(
        self, message_key: str, recipient: str | None, sticky_account: str | None = None
    ) -> list[Candidate]:
        """The full chain of one message: sticky, then domain route, then the strategy."""
        found: list[Candidate] = []
        if self.policy.sticky and sticky_account in self.accounts:
            found.append(Candidate(sticky_account, f"sticky: {sticky_account} first sent to them"))
        domain = (recipient or "").rpartition("@")[2].lower()
        provider = self._domains.get(domain)
        for index, route in enumerate(self.policy.domain_routes):
            if domain in route.domains or (
                route.mailbox_provider is not None and route.mailbox_provider == provider
            ):
                matched = domain if domain in route.domains else f"{provider} ({domain})"
                found += [
                    Candidate(a, f"domain route {index} for {matched}") for a in route.accounts
                ]
                break
        found += self._strategy(message_key)
        seen: set[str] = set()
        unique = []
        for candidate in found:
            if candidate.account not in seen:
                seen.add(candidate.account)
                unique.append(candidate)
        return unique

    def _strategy(self, message_key: str) -> list[Candidate]:
        if isinstance(self.policy, FailoverRouting):
            return [Candidate(a, "failover order") for a in self.policy.accounts]
        draw = bucket(message_key, "route")
        first = next(
            (n for n, bound in zip(self._names, self._bounds, strict=True) if draw < bound),
            self._names[-1],
        )
        rest = [n for n in self._by_weight if n != first]
        return [Candidate(first, "weighted draw")] + [Candidate(n, "by weight") for n in rest]

    def choose(
        self,
        candidates: list[Candidate],
        unavailable: Mapping[str, str],
    ) -> RouteChoice:
        """The first candidate not in ``unavailable`` (account → why it cannot take it)."""
        passed: list[tuple[str, str]] = []
        for candidate in candidates:
            why = unavailable.get(candidate.account)
            if why is None:
                return RouteChoice(candidate.account, candidate.rule, tuple(passed))
            passed.append((candidate.account, why))
        rule = candidates[0].rule if candidates else "no account routed"
        return RouteChoice(None, rule, tuple(passed))
