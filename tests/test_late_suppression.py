"""Suppressions that arrive while a send runs stop mail to their address before the next
batch leaves: feedback landed but not loaded yet, and ``mailers suppression add`` from a
second process while the send holds the warehouse.

The send is ``acme.pro_tips`` over the sandbox accounts, 10 messages per provider call,
with the :class:`SendControl` the sends asset builds (:func:`send_control`). Before its
fourth call the test lands provider feedback (unsubscribes and hard bounces) for
recipients later in the send, and suppresses one more by a real ``mailers`` process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from adapters.providers.registry import build_providers
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.config import Settings
from mailers.control import ControlJournal, load_control
from mailers.landing import land
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.messages import CAMPAIGN_FIELD, STREAM_FIELD, WORKSPACE_FIELD
from mailers.sending import CampaignSender, SendContext
from mailers.tables import ensure_tables
from orchestration.defs.campaigns import send_control
from tests.conftest import UNSUBSCRIBE_KEY, query
from tests.test_cli import mailers
from tests.test_pause_send import latest, sent_keys

CAMPAIGN = "acme.pro_tips"
WINDOW = "2026-11-23T08:00:00Z"


def _small_batches(config: dict[str, Any]) -> None:
    for account in config["workspaces"]["acme"]["provider_accounts"].values():
        account["batch_size"] = 10


def _feedback(event: str, recipient: str, n: int, stream: str = "lifecycle") -> bytes:
    """A sandbox webhook line about an earlier message to ``recipient``."""
    return json.dumps(
        {
            "id": f"late-{event}-{n}",
            "event": event,
            "timestamp": "2026-11-20T10:00:00",
            "message_id": f"earlier-{n}@sandbox.mailers.test",
            "recipient": recipient,
            "sending_domain": "news.acme.test",
            "metadata": {WORKSPACE_FIELD: "acme", STREAM_FIELD: stream, CAMPAIGN_FIELD: "old"},
            "detail": "550 5.1.1 mailbox does not exist" if event == "bounce" else None,
            "url": None,
        }
    ).encode()


def test_suppressions_landed_or_added_during_a_send_stop_mail_before_the_next_batch(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project(_small_batches)
    ref = settings.campaign(CAMPAIGN)
    calls: list[int] = []
    chosen: dict[str, list[str]] = {}
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, "run-1"))
        audience = resolve(warehouse, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())

        def suppress_before_the_fourth_call() -> None:
            calls.append(len(calls))
            if len(calls) != 4:
                return
            # Recipients nothing was recorded for yet: the call about to leave, and later ones.
            waiting = warehouse.query(
                f"select mailers_recipient as r from {audience} "
                "where mailers_disposition = 'send' and mailers_message_key not in "
                "(select message_key from mailers.send_ledger where run_id = 'run-1') "
                "order by mailers_message_key"
            )["r"].to_pylist()
            chosen["unsubscribed"] = waiting[0::3][:6]
            chosen["bounced"] = waiting[1::3][:6]
            chosen["manual"] = [waiting[2]]
            chosen["transactional_only"] = [waiting[5]]
            lines = [_feedback("unsubscribe", a, i) for i, a in enumerate(chosen["unsubscribed"])]
            lines += [_feedback("bounce", a, 100 + i) for i, a in enumerate(chosen["bounced"])]
            # An unsubscribe from the transactional stream does not stop lifecycle mail.
            lines.append(
                _feedback("unsubscribe", chosen["transactional_only"][0], 200, "transactional")
            )
            land(settings.landing_dir, "sandbox", "acme_sandbox_a", lines)
            added = mailers(
                "suppression", "add", chosen["manual"][0], "--scope", "workspace:acme",
                "--reason", "asked support to stop", "-c", str(settings.path),
            )  # fmt: skip
            assert added.returncode == 0, added.stdout + added.stderr
            assert "before its next batch" in added.stdout

        sender = CampaignSender(
            warehouse,
            SendContext(settings, ref, WINDOW, "run-1", UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
            control=send_control(settings, warehouse, ref),
            before_dispatch=suppress_before_the_fourth_call,
        )
        report = sender.run(audience)
        load_control(warehouse, ControlJournal(settings.data_dir))

    unsubscribed, bounced, manual = chosen["unsubscribed"], chosen["bounced"], chosen["manual"][0]
    blocked = set(unsubscribed) | set(bounced) | {manual}
    rows = {r["recipient"]: r for r in latest(settings).values()}
    mailed = sent_keys(settings)
    in_flight = [a for a in blocked if rows[a]["status"] != "skipped"]
    # Only the call being handed over when the suppressions arrived may still carry them.
    assert len({rows[a]["batch_id"] for a in in_flight}) <= 1, in_flight
    assert len(in_flight) <= 10
    stopped = blocked - set(in_flight)
    print(
        f"\n{len(blocked)} addresses suppressed during the send (landed feedback, and a "
        f"second process): {len(in_flight)} were in the call in flight, {len(stopped)} "
        "blocked before their batch; mailed after their batch was checked: 0"
    )
    assert len(stopped) >= 8
    for address in stopped:
        assert not mailed[rows[address]["message_key"]], address
        assert rows[address]["reason"].startswith("suppressed: "), rows[address]
    reasons = " ".join(rows[a]["reason"] for a in stopped)
    assert "during this send" in reasons
    assert report.counts["skipped_suppressed_during_send"] == len(stopped)
    assert rows[chosen["transactional_only"][0]]["status"] in {"accepted", "rejected"}
    assert max(mailed.values()) == 1
    # The manual entry was loaded once the send let go of the warehouse; `why` names it.
    entries = query(
        settings, f"select source, actor from mailers.suppressions where address = '{manual}'"
    )
    assert [e["source"] for e in entries] == ["manual"]
    if manual in stopped:
        assert "pending control record" in rows[manual]["reason"]
    why = mailers("suppression", "why", manual, "-c", str(settings.path))
    assert why.returncode == 0 and "asked support to stop" in why.stdout, why.stdout
