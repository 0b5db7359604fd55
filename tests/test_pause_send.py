"""Pauses seen by a running send: before every batch and every provider call, never rerouted.

Sends of the sandbox example's ``acme.pro_tips`` (weighted over two sandbox accounts) on a
copy of the seeded warehouse, each with the :class:`SendControl` the sends asset builds.
The sandbox accounts write one ``.eml`` per accepted message: the truth of what left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from adapters.providers.registry import build_providers
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.config import Settings
from mailers.control import ControlJournal, load_control
from mailers.ledger import LedgerContext, LedgerWriter, latest_rows_sql
from mailers.pauses import PauseBoard, PauseScope
from mailers.send_control import BatchCheck, SendControl
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables
from tests.conftest import UNSUBSCRIBE_KEY, eml_files

CAMPAIGN = "acme.pro_tips"
WINDOW = "2026-11-23T08:00:00Z"


def _small_batches(config: dict[str, Any]) -> None:
    for account in config["workspaces"]["acme"]["provider_accounts"].values():
        account["batch_size"] = 10


def send(
    settings: Settings,
    run_id: str,
    *,
    checks: Sequence[BatchCheck] = (),
    before_dispatch: Callable[[], None] | None = None,
) -> SendReport:
    ref = settings.campaign(CAMPAIGN)
    board = PauseBoard(settings.data_dir)
    control = SendControl(board, ref.workspace, str(ref.config.stream), ref.name, checks=checks)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, run_id))
        table = resolve(warehouse, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
        sender = CampaignSender(
            warehouse,
            SendContext(settings, ref, WINDOW, run_id, UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
            control=control,
            before_dispatch=before_dispatch,
        )
        report = sender.run(table)
        load_control(warehouse, ControlJournal(settings.data_dir))
        return report


def latest(settings: Settings) -> dict[str, dict[str, Any]]:
    with DuckDBWarehouse(settings.warehouse_path, read_only=True) as warehouse:
        rows = warehouse.query(latest_rows_sql(warehouse)).to_pylist()
    return {r["message_key"]: r for r in rows if r["campaign"] == "pro_tips"}


def sent_keys(settings: Settings) -> Counter[str]:
    """Message key → .eml files written for it (the sandbox's record of what it accepted)."""
    keys: Counter[str] = Counter()
    for path in eml_files(settings):
        for line in path.read_text().splitlines():
            if line.lower().startswith("x-mailers-message-key:"):
                keys[line.split(":", 1)[1].strip()] += 1
                break
    return keys


def _scope(settings: Settings, text: str) -> PauseScope:
    return PauseScope.parse(text, settings.config)


def test_a_stream_pause_before_the_send_holds_everything_and_resume_sends_it_once(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project()
    board = PauseBoard(settings.data_dir)
    stream = _scope(settings, "stream:acme.lifecycle")
    board.pause(stream, actor="alice", reason="brand review", config_hash="h")

    held = send(settings, "run-1")

    assert eml_files(settings) == []
    statuses = Counter(r["status"] for r in latest(settings).values())
    assert statuses["paused"] == held.counts["paused"] > 100
    assert set(statuses) <= {"paused", "skipped"}
    assert list(held.paused_by) == ["stream:acme.lifecycle"]
    reasons = {r["reason"] for r in latest(settings).values() if r["status"] == "paused"}
    assert reasons == {
        f"paused: {board.active()[stream.key].describe()} "
        "(mailers resume stream:acme.lifecycle --reason ...)"
    }

    board.resume(stream, actor="alice", reason="approved", config_hash="h", by_person=True)
    done = send(settings, "run-2")

    # Every held message went to a provider exactly once (the sandbox rejects a few).
    assert done.counts["accepted"] + done.counts["rejected"] == held.counts["paused"]
    assert max(sent_keys(settings).values()) == 1
    assert "paused" not in {r["status"] for r in latest(settings).values()}


def test_an_account_pause_holds_only_that_accounts_messages_and_never_reroutes_them(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project()
    board = PauseBoard(settings.data_dir)
    board.pause(
        _scope(settings, "account:acme.acme_sandbox_a"),
        actor="oncall",
        reason="provider incident",
        config_hash="h",
    )

    report = send(settings, "run-1")

    rows = latest(settings).values()
    by_status = Counter((r["status"], r["provider_account"]) for r in rows)
    assert by_status[("paused", "acme_sandbox_a")] == report.counts["paused"] > 0
    assert by_status[("accepted", "acme_sandbox_b")] == report.counts["accepted"] > 0
    assert not by_status[("accepted", "acme_sandbox_a")]
    assert eml_files(settings, "acme_sandbox_a") == []
    # Weighted 70/30: the paused share is the larger one, and none of it moved to b.
    assert report.counts["paused"] > report.counts["accepted"]


def test_a_pause_written_during_the_send_stops_it_before_the_next_batch(
    core_project: Callable[..., Settings],
) -> None:
    settings = core_project(_small_batches)
    board = PauseBoard(settings.data_dir)
    calls: list[int] = []

    def pause_after_two_calls() -> None:
        # Called right before every provider call: the pause written here, before the
        # second call, stops that very call.
        calls.append(len(eml_files(settings)))
        if len(calls) == 2:
            board.pause(_scope(settings, "acme"), actor="bob", reason="stop now", config_hash="h")

    report = send(settings, "run-1", before_dispatch=pause_after_two_calls)

    # One call of at most 10 left; the second found the pause and was not made.
    assert len(calls) == 2
    handed_over = report.counts["accepted"] + report.counts["rejected"]
    assert len(eml_files(settings)) == report.counts["accepted"]
    assert 0 < handed_over <= 10
    statuses = Counter(r["status"] for r in latest(settings).values())
    assert statuses["dispatching"] == statuses["unknown"] == 0
    assert statuses["paused"] == report.counts["paused"]
    assert set(statuses) <= {"accepted", "rejected", "paused", "skipped"}
    board.resume(
        _scope(settings, "acme"), actor="bob", reason="go", config_hash="h", by_person=True
    )
    finished = send(settings, "run-2")
    assert finished.counts["accepted"] + finished.counts["rejected"] == report.counts["paused"]
    assert max(sent_keys(settings).values()) == 1


def test_a_check_before_each_batch_can_pause_the_rest_of_the_window(
    core_project: Callable[..., Settings],
) -> None:
    """What the automatic rules do during a send: a check pauses, the next batch obeys."""
    settings = core_project()
    board = PauseBoard(settings.data_dir)
    batches: list[int] = []

    def trip_on_second_batch() -> None:
        batches.append(len(eml_files(settings)))
        if len(batches) == 2:
            board.pause(
                _scope(settings, "campaign:acme.pro_tips"),
                actor="rule:hard_bounce",
                reason="hard bounce rate 5% >= 4%",
                config_hash="h",
                automatic=True,
            )

    import mailers.sending as sending

    small = 50
    original, sending.AUDIENCE_BATCH_ROWS = sending.AUDIENCE_BATCH_ROWS, small
    try:
        report = send(settings, "run-1", checks=[trip_on_second_batch])
    finally:
        sending.AUDIENCE_BATCH_ROWS = original
    assert len(batches) == 2
    assert 0 < report.counts["accepted"] + report.counts["rejected"] <= small
    assert report.counts["paused"] > 0
    assert list(report.paused_by) == ["campaign:acme.pro_tips"]
    assert report.paused_by["campaign:acme.pro_tips"].automatic
