"""Routing policy: which provider account sends a message, and where it fails over to.

``failover`` sends everything through the first account that is up, in configured order.
``weighted`` splits messages between accounts in proportion to their weights, drawing each
message's account from a hash of its key (so a re-run routes the same way); when the drawn
account is down, the message fails over to the remaining accounts by descending weight.
"""

from __future__ import annotations

from collections.abc import Collection
from itertools import accumulate

from mailers.config import FailoverRouting, RoutingConfig, WeightedRouting
from mailers.keys import bucket


class Router:
    """Applies one stream's routing policy."""

    def __init__(self, policy: RoutingConfig) -> None:
        self.policy = policy
        if isinstance(policy, WeightedRouting):
            names = list(policy.weights)
            total = sum(policy.weights.values())
            self._names = names
            self._bounds = [edge / total for edge in accumulate(policy.weights.values())]
            self._by_weight = sorted(names, key=lambda n: (-policy.weights[n], names.index(n)))

    @property
    def accounts(self) -> list[str]:
        """Every account this policy may route to."""
        return self.policy.account_names

    def chain(self, message_key: str) -> list[str]:
        """Accounts to try for one message, first choice first."""
        if isinstance(self.policy, FailoverRouting):
            return list(self.policy.accounts)
        draw = bucket(message_key, "route")
        first = next(
            (n for n, bound in zip(self._names, self._bounds, strict=True) if draw < bound),
            self._names[-1],
        )
        return [first, *(n for n in self._by_weight if n != first)]

    def route(self, message_key: str, down: Collection[str] = ()) -> str | None:
        """The first account in the message's chain that is not down, or ``None``."""
        return next((a for a in self.chain(message_key) if a not in down), None)
