"""The automatic rules during a long send: complaints landed mid-run pause the stream.

The globex newsletter goes out in small audience batches through the sandbox, which lands
each batch's events at once; :class:`LiveRules`, the send's check before every batch,
counts the landed complaints (nothing is loaded during the send), pauses the stream, and
the next batch obeys: the rest of the window is recorded ``paused`` and nothing more of
it leaves. Another workspace's send is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from adapters.providers.registry import build_providers, event_parser
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers import sending
from mailers.audience import AudienceSpec, resolve
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerWriter
from mailers.pause_rules import LiveRules
from mailers.pauses import PauseBoard
from mailers.send_control import SendControl
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables
from tests.conftest import UNSUBSCRIBE_KEY, eml_files


@pytest.fixture
def project(core_project: Callable[..., Settings]) -> Settings:
    def mutate(config: dict[str, Any]) -> None:
        config["workspaces"]["globex"]["pause_rules"] = {"min_volume": 100}

    return core_project(mutate)


def send(settings: Settings, campaign: str, window: str, clock: FixedClock) -> SendReport:
    ref = settings.campaign(campaign)
    board = PauseBoard(settings.data_dir)
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        ensure_tables(warehouse)
        live = LiveRules(warehouse, settings, board, event_parser)
        control = SendControl(
            board, ref.workspace, str(ref.config.stream), ref.name, checks=[live.check]
        )
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, window, "run-1"))
        table = resolve(warehouse, AudienceSpec.of(ref, window), ledger.settled_keys_sql())
        sender = CampaignSender(
            warehouse,
            SendContext(settings, ref, window, "run-1", UNSUBSCRIBE_KEY),
            build_providers(settings, ref.workspace),
            control=control,
            sleep=clock.advance,
        )
        return sender.run(table)


def test_complaints_landed_mid_send_pause_the_stream_before_the_next_batch(
    project: Settings, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sending, "AUDIENCE_BATCH_ROWS", 50)
    report = send(project, "globex.launch_newsletter", "once", fixed_clock)

    (pause,) = PauseBoard(project.data_dir).active().values()
    assert pause.automatic and pause.scope.key == "stream:globex.lifecycle"
    assert pause.reason.startswith("complaint ")
    (finding,) = pause.evidence["findings"]
    assert finding["landed_events_read"] > 0, "counted from landed files, nothing was loaded"
    handed_over = report.counts["accepted"] + report.counts["rejected"]
    assert 100 <= finding["volume"] <= handed_over < 100 + 50 * 2
    assert report.counts["paused"] > 0
    assert list(report.paused_by) == ["stream:globex.lifecycle"]
    assert len(eml_files(project, "globex_sandbox")) == report.counts["accepted"]

    other = send(project, "acme.pro_tips", "2026-11-23T08:00:00Z", fixed_clock)
    assert other.counts["accepted"] > 0 and other.counts.get("paused", 0) == 0
