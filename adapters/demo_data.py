"""Example contacts and suppressions for the demo: deterministic, messy on purpose.

The contacts exercise every path of the pipeline: clean addresses, addresses that need
normalizing (spaces, upper-case domains), case-variant duplicates, invalid and missing
addresses, the sandbox's bounce/complaint/reject test domains, and rows lacking a
personalization variable. A fixed seed and a fixed reference date make every demo equal.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from mailers.clock import utcnow
from mailers.suppression import SUPPRESSIONS_SCHEMA, SUPPRESSIONS_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse

CRM_SCHEMA = "crm"
CONTACTS_TABLE = "contacts"
REFERENCE_DATE = datetime(2026, 11, 1)

CONTACTS_SCHEMA = pa.schema(
    [
        pa.field("contact_id", pa.int64(), nullable=False),
        pa.field("brand", pa.string(), nullable=False),
        pa.field("email", pa.string()),
        pa.field("first_name", pa.string()),
        pa.field("last_name", pa.string()),
        pa.field("plan", pa.string(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("marketing_opt_in", pa.bool_(), nullable=False),
        pa.field("signed_up_at", pa.timestamp("us"), nullable=False),
        pa.field("last_active_at", pa.timestamp("us"), nullable=False),
    ]
)

_FIRST = ["Ann", "Bob", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kai"]
_LAST = ["Lee", "Moreno", "Novak", "Okafor", "Park", "Quinn", "Rossi", "Sato", "Tan", "Ueda"]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.net"]
_TEST_DOMAINS = [
    (0.03, "bounce.mailers.test"),
    (0.015, "softbounce.mailers.test"),
    (0.015, "complaint.mailers.test"),
    (0.01, "reject.mailers.test"),
]
_INVALID = [
    "not-an-email",
    "missing-at.example.com",
    "two@@example.com",
    "dot.@example.com",
    "trailing@example",
    "spaces in@example.com",
    "@example.com",
]


def _address(rng: random.Random, first: str, last: str, contact_id: int) -> str | None:
    draw = rng.random()
    edge = 0.0
    for share, domain in _TEST_DOMAINS:
        edge += share
        if draw < edge:
            return f"{first}.{last}{contact_id}@{domain}".lower()
    if draw < edge + 0.02:
        return rng.choice(_INVALID)
    if draw < edge + 0.03:
        return None
    address = f"{first}.{last}{contact_id}@{rng.choice(_DOMAINS)}".lower()
    if draw < edge + 0.08:
        # Needs normalizing: surrounding spaces and an upper-case domain.
        local, domain = address.split("@")
        return f"  {local}@{domain.upper()} "
    return address


def contacts(count: int, seed: int = 7) -> pa.Table:
    """``count`` example contacts of the brands ``acme`` and ``globex``."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for contact_id in range(1, count + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = _address(rng, first, last, contact_id)
        previous = rows[-1]["email"] if rows else None
        if previous and rng.random() < 0.03:
            # A case-variant duplicate of the previous contact's address.
            email = str(previous).strip().upper()
        signed_up = REFERENCE_DATE - timedelta(days=rng.randint(30, 900))
        rows.append(
            {
                "contact_id": contact_id,
                "brand": "acme" if rng.random() < 0.6 else "globex",
                "email": email,
                "first_name": None if rng.random() < 0.03 else first,
                "last_name": last,
                "plan": rng.choices(["free", "trial", "pro"], weights=[5, 2, 3])[0],
                "country": rng.choice(["DE", "US", "FR", "JP", "BR", None]),
                "marketing_opt_in": rng.random() < 0.85,
                "signed_up_at": signed_up,
                "last_active_at": REFERENCE_DATE - timedelta(days=rng.randint(0, 200)),
            }
        )
    return pa.Table.from_pylist(rows, schema=CONTACTS_SCHEMA)


DEMO_ACTOR = "demo-support"
"""Who the demo's manual suppressions say added them."""


def manual_suppressions(people: pa.Table, share: float = 0.02, seed: int = 11) -> pa.Table:
    """Operator-entered suppressions for a share of the valid contact addresses."""
    rng = random.Random(seed)
    now = utcnow()
    rows = []
    for contact_id, email, brand in zip(
        people["contact_id"].to_pylist(),
        people["email"].to_pylist(),
        people["brand"].to_pylist(),
        strict=True,
    ):
        if not email or "@" not in email or rng.random() >= share:
            continue
        workspace_scoped = rng.random() < 0.5
        rows.append(
            {
                "suppression_id": f"manual-{contact_id}",
                "address": email.strip().lower(),
                "scope": "workspace" if workspace_scoped else "global",
                "workspace": brand if workspace_scoped else None,
                "stream": None,
                "source": "manual",
                "reason": "asked support to stop all email"
                if not workspace_scoped
                else f"asked {brand} support to stop email",
                "event_id": None,
                "created_at": now,
                "action": "add",
                "actor": DEMO_ACTOR,
                "origin": "demo seed",
            }
        )
    return pa.Table.from_pylist(rows, schema=SUPPRESSIONS_SCHEMA)


def seed(warehouse: Warehouse, count: int) -> tuple[int, int]:
    """Replace the demo contacts and add manual suppressions; return both counts."""
    people = contacts(count)
    warehouse.ensure_table(CRM_SCHEMA, CONTACTS_TABLE, CONTACTS_SCHEMA)
    warehouse.execute(f"delete from {warehouse.relation(CRM_SCHEMA, CONTACTS_TABLE)}")
    warehouse.append(CRM_SCHEMA, CONTACTS_TABLE, people)
    suppressions = manual_suppressions(people)
    table = warehouse.relation(MAILERS_SCHEMA, SUPPRESSIONS_TABLE)
    existing = set(
        warehouse.query(f"select suppression_id from {table} where source = 'manual'")[
            "suppression_id"
        ].to_pylist()
    )
    mask = pa.array([sid not in existing for sid in suppressions["suppression_id"].to_pylist()])
    new = suppressions.filter(mask)
    warehouse.append(MAILERS_SCHEMA, SUPPRESSIONS_TABLE, new)
    return people.num_rows, new.num_rows
