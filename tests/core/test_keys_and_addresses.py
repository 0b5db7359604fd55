"""Message keys and address syntax: Python and the warehouse SQL must agree exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.addresses import ADDRESS_PATTERN, MAX_ADDRESS_LENGTH, is_valid, normalize
from mailers.keys import KEY_SEPARATOR, bucket, message_key

LONG_LOCAL = "a" * 70
LONG_DOMAIN = ".".join(["b" * 60] * 3) + ".com"
TOO_LONG = f"{LONG_LOCAL}@{LONG_DOMAIN}"  # matches the pattern, but 257 characters

VALID = [
    "ann@example.com",
    "Ann.Lee@example.com",
    "ann+newsletter@example.com",
    "ann+a+b@example.com",
    "first.last@mail.sub.example.co.uk",
    "o'brien@example.ie",
    "a!#$%&'*+/=?^_`{|}~-z@example.com",
    "user@xn--80ak6aa92e.xn--p1ai",
    "user@example.xn--p1ai",
    "x@a.io",
    "n@1example.com",
    "n@ex-ample.com",
    "n@" + "c" * 63 + ".com",
    ("d" * 64) + "@" + ".".join(["e" * 60] * 3) + ".org",  # 253 characters
]

INVALID = [
    "",
    "annexample.com",
    "ann@@example.com",
    "ann@b@example.com",
    ".ann@example.com",
    "ann.@example.com",
    "an..n@example.com",
    "@example.com",
    "ann@",
    "ann@example",
    "ann@example.c",
    "ann@example.123",
    "ann @example.com",
    "ann@exa mple.com",
    "ann@-example.com",
    "ann@example-.com",
    "ann@.example.com",
    "ann@example..com",
    "ann@" + "c" * 64 + ".com",
    "ann@exämple.com",
    "(ann)@example.com",
    "ann,lee@example.com",
    TOO_LONG,
]


@pytest.fixture(scope="module")
def warehouse() -> Iterator[DuckDBWarehouse]:
    with DuckDBWarehouse(":memory:") as wh:
        yield wh


def sql_verdicts(warehouse: DuckDBWarehouse, addresses: list[str]) -> list[bool]:
    """The audience step's validity check, evaluated in the warehouse, in input order."""
    d = warehouse.dialect
    matches = d.regexp_matches("address", ADDRESS_PATTERN)
    check = f"length(address) <= {MAX_ADDRESS_LENGTH} and {matches}"
    rows = warehouse.query(
        f"select ordinality, {check} as ok "
        "from unnest(?) with ordinality as t(address, ordinality) order by ordinality",
        [addresses],
    ).to_pylist()
    return [row["ok"] for row in rows]


def test_message_key_is_md5_hex() -> None:
    key = message_key("acme", "pro_tips", "ann@example.com", "once")

    assert re.fullmatch(r"[0-9a-f]{32}", key)


def test_message_key_ignores_recipient_case_and_surrounding_space() -> None:
    key = message_key("acme", "pro_tips", "ann@example.com", "once")

    assert message_key("acme", "pro_tips", "  ANN@Example.COM\t", "once") == key


@pytest.mark.parametrize(
    "other",
    [
        ("globex", "pro_tips", "ann@example.com", "once"),
        ("acme", "launch", "ann@example.com", "once"),
        ("acme", "pro_tips", "bob@example.com", "once"),
        ("acme", "pro_tips", "ann@example.com", "2026-11-23T08:00:00Z"),
    ],
)
def test_message_key_differs_by_each_part(other: tuple[str, str, str, str]) -> None:
    assert message_key(*other) != message_key("acme", "pro_tips", "ann@example.com", "once")


def test_message_key_does_not_depend_on_window_case() -> None:
    # Windows are ids, not addresses: only the recipient is case-folded.
    assert message_key("acme", "c", "a@b.co", "Once") != message_key("acme", "c", "a@b.co", "once")


def test_bucket_is_deterministic_and_in_unit_interval() -> None:
    keys = [message_key("acme", "c", f"u{i}@example.com", "once") for i in range(5_000)]

    draws = [bucket(key, "route") for key in keys]

    assert all(0.0 <= draw < 1.0 for draw in draws)
    assert draws == [bucket(key, "route") for key in keys]
    assert sum(draws) / len(draws) == pytest.approx(0.5, abs=0.02)


def test_bucket_salts_give_independent_draws() -> None:
    keys = [message_key("acme", "c", f"u{i}@example.com", "once") for i in range(20_000)]

    both_low = sum(bucket(key, "route") < 0.5 and bucket(key, "engage") < 0.5 for key in keys)

    assert both_low / len(keys) == pytest.approx(0.25, abs=0.015)
    assert bucket(keys[0], "route") != bucket(keys[0], "engage") != bucket(keys[0])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann@Example.COM ", "Ann@example.com"),
        ("ann@example.com", "ann@example.com"),
        ("\tBob.Lee@MAIL.Example.org\n", "Bob.Lee@mail.example.org"),
        ("no-at-sign ", "no-at-sign"),
        ("weird@name@EXAMPLE.com", "weird@name@example.com"),
    ],
)
def test_normalize_trims_and_lowercases_only_the_domain(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize("address", VALID)
def test_valid_addresses(address: str) -> None:
    assert is_valid(address)


@pytest.mark.parametrize("address", INVALID)
def test_invalid_addresses(address: str) -> None:
    assert not is_valid(address)


def test_length_limit_is_254() -> None:
    assert len(TOO_LONG) > MAX_ADDRESS_LENGTH
    assert re.match(ADDRESS_PATTERN, TOO_LONG)  # only the length rule rejects it
    assert len(VALID[-1]) <= MAX_ADDRESS_LENGTH


def test_sql_regex_agrees_with_python(warehouse: DuckDBWarehouse) -> None:
    addresses = VALID + INVALID

    assert sql_verdicts(warehouse, addresses) == [is_valid(a) for a in addresses]
    assert sql_verdicts(warehouse, addresses) == [True] * len(VALID) + [False] * len(INVALID)


def test_sql_and_python_agree_on_a_trailing_newline(warehouse: DuckDBWarehouse) -> None:
    address = "ann@example.com\n"

    assert sql_verdicts(warehouse, [address]) == [is_valid(address)]


@pytest.mark.parametrize(
    "recipient",
    ["ann@example.com", "Ann@Example.COM", "BOB.LEE+tag@MAIL.example.org", "o'brien@example.ie"],
)
def test_sql_message_key_matches_python(warehouse: DuckDBWarehouse, recipient: str) -> None:
    # The same expression shape mailers/audience.py builds: 'ws|campaign' || '|' ||
    # lower(recipient) || '|' || window, hashed with the dialect's md5.
    sep = KEY_SEPARATOR
    expression = warehouse.dialect.md5_hex(
        f"'acme{sep}pro_tips' || '{sep}' || lower(?) || '{sep}' || '2026-11-23T08:00:00Z'"
    )

    sql_key = warehouse.query(f"select {expression} as k", [recipient])["k"][0].as_py()

    assert sql_key == message_key("acme", "pro_tips", recipient, "2026-11-23T08:00:00Z")
