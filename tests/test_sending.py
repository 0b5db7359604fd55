"""Sending campaign windows on a real DuckDB file through sandbox accounts.

These exercise the core send loop (audience → render → route → ledger → provider) without
Dagster: idempotent re-runs, failover, outages, ambiguous outcomes, a killed process.
"""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from adapters.providers.registry import build_providers
from adapters.settings import load
from mailers.addresses import is_valid, normalize
from mailers.config import Settings
from mailers.messages import MESSAGE_KEY_HEADER, OutboundMessage, SendOutcome, SendResult
from mailers.providers import DispatchJournal, Provider
from mailers.unsubscribe import verify
from tests.conftest import REPO, UNSUBSCRIBE_KEY, eml_files, query, send_window_once, write_config

WINDOW = "2026-11-23T08:00:00Z"


class RecordingProvider:
    """Wraps a real provider and remembers every message key handed to it."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.account = inner.account
        self.max_batch_size = inner.max_batch_size
        self.sent: list[str] = []

    def send_batch(
        self, messages: Sequence[OutboundMessage], journal: DispatchJournal | None = None
    ) -> list[SendResult]:
        self.sent.extend(m.message_key for m in messages)
        return self.inner.send_batch(messages, journal)


def _fault(*accounts: str, fault: str = "unavailable") -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        for account in accounts:
            config["workspaces"]["acme"]["provider_accounts"][account]["settings"]["fault"] = fault

    return mutate


def _batch_size(size: int) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        for account in config["workspaces"]["acme"]["provider_accounts"].values():
            account["batch_size"] = size

    return mutate


def _latest_status(settings: Settings) -> dict[str, str]:
    rows = query(
        settings,
        """
        select message_key, status from (
            select message_key, status, row_number() over (
                partition by message_key order by recorded_at desc,
                case status when 'dispatching' then 0 else 1 end desc) as r
            from mailers.send_ledger) where r = 1
        """,
    )
    return {row["message_key"]: row["status"] for row in rows}


def _accepted_keys(settings: Settings) -> list[str]:
    rows = query(settings, "select message_key from mailers.send_ledger where status = 'accepted'")
    return [row["message_key"] for row in rows]


def test_a_second_run_of_the_same_window_sends_nothing(core_project) -> None:
    settings = core_project()
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert first.counts["accepted"] > 50
    files = eml_files(settings)
    assert len(files) == first.counts["accepted"]

    second = send_window_once(settings, "acme.pro_tips", window=WINDOW, run_id="run-2")
    assert second.counts["accepted"] == 0
    assert second.counts["skipped_recorded"] == 0
    assert eml_files(settings) == files
    accepted = _accepted_keys(settings)
    assert len(accepted) == len(set(accepted)) == first.counts["accepted"]


def test_the_next_window_of_a_recurring_campaign_sends_again(core_project) -> None:
    settings = core_project()
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    later = send_window_once(
        settings, "acme.pro_tips", window="2026-11-30T08:00:00Z", run_id="run-2"
    )
    assert later.counts["accepted"] == first.counts["accepted"]


def test_suppressed_and_invalid_recipients_never_reach_a_provider(core_project) -> None:
    settings = core_project()
    send_window_once(settings, "acme.pro_tips", window=WINDOW)
    suppressed = {
        row["address"]
        for row in query(
            settings,
            "select address from mailers.suppressions where scope = 'global' or workspace = 'acme'",
        )
    }
    segment = query(settings, "select email from segments.seg_acme_active_pro")
    sent_to = {
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"].lower()
        for path in eml_files(settings)
    }
    assert suppressed and sent_to
    assert not sent_to & suppressed
    assert all(is_valid(address) for address in sent_to)
    eligible = {
        normalize(row["email"]).lower()
        for row in segment
        if row["email"] and is_valid(normalize(row["email"]))
    } - suppressed
    rejected_domain = {a for a in eligible if a.endswith("@reject.mailers.test")}
    assert sent_to == eligible - rejected_domain
    reasons = Counter(
        row["reason"]
        for row in query(
            settings, "select reason from mailers.send_ledger where status = 'skipped'"
        )
    )
    assert reasons["suppressed"] > 0 and reasons["invalid_address"] > 0


def test_messages_carry_their_key_and_a_signed_one_click_unsubscribe(core_project) -> None:
    settings = core_project()
    send_window_once(settings, "acme.pro_tips", window=WINDOW)
    message = email.message_from_bytes(
        eml_files(settings)[0].read_bytes(), policy=email.policy.default
    )
    key = message[MESSAGE_KEY_HEADER]
    assert eml_files(settings)[0].stem == key
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = message["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://unsubscribe.mailers.test/u?token=")
    claim = verify(url.split("token=", 1)[1], UNSUBSCRIBE_KEY)
    assert (claim.message_key, claim.workspace, claim.stream) == (key, "acme", "lifecycle")
    assert url in message.get_body(("plain",)).get_content()


def test_failover_moves_traffic_off_an_account_that_errors(core_project) -> None:
    settings = core_project(_fault("acme_sandbox_a"))
    report = send_window_once(settings, "acme.pro_tips", window=WINDOW)

    assert set(report.down_accounts) == {"acme_sandbox_a"}
    assert report.counts["accepted"] > 50
    assert report.accounts == Counter({"acme_sandbox_b": report.counts["accepted"]})
    assert eml_files(settings, "acme_sandbox_a") == []
    assert len(eml_files(settings, "acme_sandbox_b")) == report.counts["accepted"]
    # The batch tried on the broken account is on record as not sent, then accepted via b.
    tried_a = query(
        settings,
        "select message_key, status from mailers.send_ledger where provider_account = "
        "'acme_sandbox_a'",
    )
    assert {row["status"] for row in tried_a} == {"dispatching", "not_sent"}
    latest = _latest_status(settings)
    assert {latest[row["message_key"]] for row in tried_a} <= {"accepted", "rejected"}


def test_an_outage_of_every_account_is_retried_on_the_next_run_and_sent_once(
    core_project, tmp_path: Path
) -> None:
    settings = core_project(_fault("acme_sandbox_a", "acme_sandbox_b"))
    down = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert down.counts["accepted"] == 0
    assert down.counts["not_sent"] > 50
    assert eml_files(settings) == []

    healed = load(write_config(tmp_path))  # same data dir, faults cleared
    retry = send_window_once(healed, "acme.pro_tips", window=WINDOW, run_id="run-2")
    assert retry.counts["accepted"] + retry.counts["rejected"] == down.counts["not_sent"]
    accepted = _accepted_keys(healed)
    assert len(accepted) == len(set(accepted)) == len(eml_files(healed))


def test_an_ambiguous_outcome_is_recorded_unknown_and_never_resent(core_project) -> None:
    settings = core_project(_fault("acme_sandbox_a", fault="timeout"))
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    assert first.counts["unknown"] > 0 and first.counts["accepted"] > 0
    unknown = {key for key, status in _latest_status(settings).items() if status == "unknown"}
    assert len(unknown) == first.counts["unknown"]

    providers = {
        name: RecordingProvider(p) for name, p in build_providers(settings, "acme").items()
    }
    again = send_window_once(
        settings, "acme.pro_tips", window=WINDOW, run_id="run-2", providers=providers
    )
    assert again.counts["accepted"] == 0
    assert not any(p.sent for p in providers.values())
    dispatches = Counter(
        row["message_key"]
        for row in query(
            settings, "select message_key from mailers.send_ledger where status = 'dispatching'"
        )
    )
    assert all(dispatches[key] == 1 for key in unknown)


def test_a_template_error_fails_only_that_recipient(core_project) -> None:
    settings = core_project()
    report = send_window_once(settings, "globex.launch_newsletter", window="once")
    assert report.counts["render_failed"] > 0
    assert report.counts["accepted"] > 100
    failed = query(
        settings,
        "select recipient, reason from mailers.send_ledger where status = 'render_failed'",
    )
    assert len(failed) == report.counts["render_failed"]
    assert all("'first_name' is undefined" in row["reason"] for row in failed)
    sent_to = {
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"]
        for p in eml_files(settings)
    }
    assert not sent_to & {row["recipient"] for row in failed}


def test_a_stale_audience_table_never_leads_to_a_second_send(core_project) -> None:
    from adapters.warehouses.duckdb import DuckDBWarehouse
    from mailers.sending import CampaignSender, SendContext

    settings = core_project()
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW)
    ref = settings.campaign("acme.pro_tips")
    with DuckDBWarehouse(settings.warehouse_path) as warehouse:
        sender = CampaignSender(
            warehouse,
            SendContext(settings, ref, WINDOW, "run-2", UNSUBSCRIBE_KEY),
            build_providers(settings, "acme"),
        )
        # The audience table still lists the first run's recipients as "send".
        report = sender.run('"mailers_work"."audience__acme__pro_tips"')
    assert first.counts["accepted"] > 0
    assert report.counts["accepted"] == 0
    assert len(eml_files(settings)) == first.counts["accepted"]


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from adapters.providers.registry import build_providers
    from adapters.settings import load
    from tests.conftest import send_window_once

    settings = load(sys.argv[1])

    class DiesBeforeTheOutcomeRow:
        def __init__(self, inner):
            self.inner = inner
        def handing_over(self, messages, idempotency_keys):
            self.inner.handing_over(messages, idempotency_keys)
        def answered(self, results):
            os.kill(os.getpid(), signal.SIGKILL)  # after handover, before the outcome row

    class DiesAfterHandover:
        def __init__(self, inner):
            self.inner, self.kind, self.account = inner, inner.kind, inner.account
            self.max_batch_size = inner.max_batch_size
        def send_batch(self, messages, journal=None):
            if self.account == "acme_sandbox_a":
                journal = DiesBeforeTheOutcomeRow(journal)
            return self.inner.send_batch(messages, journal)

    providers = {n: DiesAfterHandover(p) for n, p in build_providers(settings, "acme").items()}
    send_window_once(settings, "acme.pro_tips", window=sys.argv[2], providers=providers)
    """
)


def test_a_run_killed_between_dispatch_and_outcome_does_not_resend_on_retry(
    core_project, tmp_path: Path
) -> None:
    settings = core_project(_batch_size(10))
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(settings.path), WINDOW],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    in_doubt = {key for key, status in _latest_status(settings).items() if status == "dispatching"}
    assert 0 < len(in_doubt) <= 10
    handed_over = {path.stem for path in eml_files(settings)}
    assert in_doubt <= handed_over

    providers = {
        name: RecordingProvider(p) for name, p in build_providers(settings, "acme").items()
    }
    retry = send_window_once(
        settings, "acme.pro_tips", window=WINDOW, run_id="retry", providers=providers
    )
    resent = {key for p in providers.values() for key in p.sent}
    assert retry.counts["reconciled_unknown"] == len(in_doubt)
    assert not resent & handed_over
    assert retry.counts["accepted"] > 0
    latest = _latest_status(settings)
    assert all(latest[key] == "unknown" for key in in_doubt)
    reasons = query(
        settings,
        "select reason from mailers.send_ledger where status = 'unknown' and run_id = 'retry'",
    )
    assert all("ended before the provider's answer" in row["reason"] for row in reasons)


class HandsOverHalf:
    """A provider taking a batch in several requests, the second of which fails first."""

    def __init__(self, inner: Provider) -> None:
        self.inner, self.kind, self.account = inner, inner.kind, inner.account
        self.max_batch_size = inner.max_batch_size
        self.failing = True

    def send_batch(
        self, messages: Sequence[OutboundMessage], journal: DispatchJournal | None = None
    ) -> list[SendResult]:
        if not self.failing:
            return self.inner.send_batch(messages, journal)
        half = len(messages) // 2
        never_sent = [
            SendResult(
                m.message_key,
                accepted=False,
                reason="later request failed",
                outcome=SendOutcome.NOT_SENT,
            )
            for m in messages[half:]
        ]
        if journal is not None:
            journal.answered(never_sent)
        return [*self.inner.send_batch(messages[:half], journal), *never_sent]


def test_messages_a_provider_never_handed_over_are_retried_next_run(core_project) -> None:
    settings = core_project()
    providers = {name: HandsOverHalf(p) for name, p in build_providers(settings, "acme").items()}
    first = send_window_once(settings, "acme.pro_tips", window=WINDOW, providers=providers)
    assert first.counts["not_sent"] > 0 and first.counts["accepted"] > 0
    for provider in providers.values():
        provider.failing = False
    second = send_window_once(
        settings, "acme.pro_tips", window=WINDOW, run_id="run-2", providers=providers
    )
    assert second.counts["accepted"] + second.counts["rejected"] == first.counts["not_sent"]
    accepted = _accepted_keys(settings)
    assert len(accepted) == len(set(accepted)) == len(eml_files(settings))
