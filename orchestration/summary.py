"""What the CLI prints after a run: read from the dbt marts, never recomputed."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mailers.warehouse import Warehouse


def deliverability(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Totals per workspace, stream, provider account and sending domain, from the mart."""
    mart = warehouse.relation("marts", "fct_deliverability_daily")
    return warehouse.query(
        f"""
        select workspace, stream, provider_account, sending_domain,
            sum(sent) as sent, sum(delivered) as delivered,
            sum(hard_bounces) as hard_bounces, sum(soft_bounces) as soft_bounces,
            sum(complaints) as complaints, sum(opens) as opens, sum(clicks) as clicks,
            sum(unsubscribes) as unsubscribes
        from {mart}
        group by all
        order by workspace, stream, provider_account, sending_domain
        """
    ).to_pylist()


def message_statuses(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Messages per campaign and status, from ``fct_messages``."""
    mart = warehouse.relation("marts", "fct_messages")
    return warehouse.query(
        f"""
        select workspace || '.' || campaign as campaign, status, count(*) as messages
        from {mart} group by all order by campaign, messages desc
        """
    ).to_pylist()


def deferred_by_policy(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Messages the sending policy deferred, per campaign, identity, cap and eligible day."""
    mart = warehouse.relation("marts", "fct_messages")
    cap = warehouse.dialect.regexp_group("ledger_reason", r"\(([^:()]+):")
    return warehouse.query(
        f"""
        select workspace || '.' || campaign as campaign, identity, {cap} as cap,
            eligible_at, count(*) as messages
        from {mart} where ledger_status = 'deferred'
        group by all order by campaign, identity, eligible_at
        """
    ).to_pylist()


def print_deferred(console: Console, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="Deferred by warm-up curves and caps (go out on a later run)")
    for column in ("campaign", "identity", "cap", "eligible from (UTC)", "messages"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for row in rows:
        eligible = row["eligible_at"]
        table.add_row(
            row["campaign"],
            row["identity"] or "",
            row["cap"] or "",
            f"{eligible:%Y-%m-%d %H:%M}" if eligible else "",
            str(row["messages"]),
        )
    console.print(table)
    console.print(
        "deferred messages are never dropped: the first run of their window after 'eligible "
        "from' sends them (`mailers plan WORKSPACE.CAMPAIGN` shows today's caps)"
    )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def print_deliverability(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="Deliverability (marts.fct_deliverability_daily)")
    for column in (
        "workspace",
        "stream",
        "account",
        "domain",
        "sent",
        "delivered",
        "bounce",
        "complaint",
        "open",
        "click",
        "unsub",
    ):
        table.add_column(
            column,
            justify="left" if column in {"workspace", "stream", "account", "domain"} else "right",
        )
    for row in rows:
        sent, delivered = row["sent"] or 0, row["delivered"] or 0
        bounces = (row["hard_bounces"] or 0) + (row["soft_bounces"] or 0)
        table.add_row(
            row["workspace"],
            row["stream"],
            row["provider_account"],
            row["sending_domain"],
            str(sent),
            str(delivered),
            _pct(bounces, sent),
            _pct(row["complaints"] or 0, delivered),
            _pct(row["opens"] or 0, delivered),
            _pct(row["clicks"] or 0, delivered),
            _pct(row["unsubscribes"] or 0, delivered),
        )
    console.print(table)


def print_statuses(console: Console, rows: list[dict[str, Any]]) -> None:
    table = Table(title="Messages by status (marts.fct_messages)")
    for column in ("campaign", "status", "messages"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for row in rows:
        table.add_row(row["campaign"], row["status"], str(row["messages"]))
    console.print(table)
