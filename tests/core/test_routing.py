"""Routing: failover order, weighted splits by message key, and failing over when down."""

from __future__ import annotations

from collections import Counter

import pytest

from mailers.config import FailoverRouting, WeightedRouting
from mailers.keys import message_key
from mailers.routing import Router

SAMPLE = 100_000


def keys(count: int) -> list[str]:
    return [message_key("acme", "pro_tips", f"user{i}@example.com", "once") for i in range(count)]


@pytest.fixture(scope="module")
def many_keys() -> list[str]:
    return keys(SAMPLE)


def failover(*accounts: str) -> Router:
    return Router(FailoverRouting(strategy="failover", accounts=list(accounts)))


def weighted(**weights: int) -> Router:
    return Router(WeightedRouting(strategy="weighted", weights=weights))


def test_failover_chain_is_configured_order() -> None:
    router = failover("primary", "secondary", "tertiary")

    assert router.accounts == ["primary", "secondary", "tertiary"]
    for key in keys(20):
        assert router.chain(key) == ["primary", "secondary", "tertiary"]
        assert router.route(key) == "primary"


def test_failover_skips_down_accounts() -> None:
    router = failover("primary", "secondary", "tertiary")
    key = keys(1)[0]

    assert router.route(key, down={"primary"}) == "secondary"
    assert router.route(key, down={"primary", "secondary"}) == "tertiary"
    assert router.route(key, down={"secondary"}) == "primary"


def test_failover_returns_none_when_every_account_is_down() -> None:
    router = failover("primary", "secondary")

    assert router.route(keys(1)[0], down={"primary", "secondary"}) is None


def test_weighted_split_matches_weights(many_keys: list[str]) -> None:
    router = weighted(a=70, b=30)

    shares = Counter(router.route(key) for key in many_keys)

    assert set(shares) == {"a", "b"}
    assert shares["a"] / SAMPLE == pytest.approx(0.7, abs=0.01)


def test_three_way_split_matches_weights(many_keys: list[str]) -> None:
    router = weighted(a=50, b=30, c=20)

    shares = Counter(router.route(key) for key in many_keys)

    assert shares["a"] / SAMPLE == pytest.approx(0.5, abs=0.01)
    assert shares["b"] / SAMPLE == pytest.approx(0.3, abs=0.01)
    assert shares["c"] / SAMPLE == pytest.approx(0.2, abs=0.01)


def test_weighted_routing_is_deterministic_per_key() -> None:
    first = weighted(a=70, b=30)
    second = weighted(a=70, b=30)

    for key in keys(500):
        assert first.route(key) == first.route(key) == second.route(key)


def test_weighted_fails_over_everything_when_an_account_is_down() -> None:
    router = weighted(a=70, b=30)

    assert {router.route(key, down={"a"}) for key in keys(2_000)} == {"b"}
    assert router.route(keys(1)[0], down={"a", "b"}) is None


def test_weighted_chain_puts_the_drawn_account_first_then_by_weight() -> None:
    router = weighted(small=10, big=60, medium=30)
    firsts = Counter()

    for key in keys(3_000):
        chain = router.chain(key)
        first = chain[0]
        firsts[first] += 1
        assert first == router.route(key)
        assert sorted(chain) == ["big", "medium", "small"]
        rest = [name for name in ["big", "medium", "small"] if name != first]
        assert chain[1:] == rest

    assert set(firsts) == {"big", "medium", "small"}


def test_weighted_equal_weights_fall_back_in_configured_order() -> None:
    router = weighted(x=1, y=1, z=1)

    for key in keys(300):
        chain = router.chain(key)
        assert chain[1:] == [name for name in ["x", "y", "z"] if name != chain[0]]


def test_changing_weights_moves_only_some_keys() -> None:
    before = weighted(a=70, b=30)
    after = weighted(a=60, b=40)
    sample = keys(10_000)

    moved = sum(before.route(key) != after.route(key) for key in sample)

    # Only keys whose draw falls between the old and the new boundary change account.
    assert moved / len(sample) == pytest.approx(0.1, abs=0.02)
