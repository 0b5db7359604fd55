"""The core promise under faults and crashes, at the size of a real campaign.

A one-off campaign of ~3,300 recipients goes through the provider simulator over loopback:

* with a realistic fault mix (429 and 503 with ``Retry-After``, 500 after the message was
  stored, read timeouts after it was stored, connections dropped before and after it was
  processed) for each HTTP provider, failing over to a clean second provider;
* with the sending process killed by SIGKILL at random moments, then the window re-run.

Each time the simulator's own count of accepted messages per message key is the truth the
ledger is checked against: nothing is accepted twice, the ledger's ``accepted`` set is the
simulator's, doubt is never larger than what was in flight (and is settled by
reconciliation where the provider can be asked), and every recipient ends with exactly
one final outcome.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.providers.registry import build_providers, message_lookups
from adapters.settings import load
from adapters.simulator import mailgun as mailgun_sim
from adapters.simulator import postmark as postmark_sim
from adapters.simulator import resend as resend_sim
from adapters.simulator import sendgrid as sendgrid_sim
from adapters.simulator.server import Fault, FaultMix, Simulator
from adapters.warehouses.duckdb import DuckDBWarehouse
from mailers.audience import AudienceSpec, resolve
from mailers.clock import FixedClock
from mailers.config import Settings
from mailers.ledger import LedgerContext, LedgerWriter, latest_rows_sql
from mailers.ledger_journal import journal_dir, read_journal, send_warehouse
from mailers.planning import plan
from mailers.sending import CampaignSender, SendContext, SendReport
from mailers.tables import ensure_tables
from tests.conftest import REPO, UNSUBSCRIBE_KEY, run_dbt, seed_warehouse, write_config

CAMPAIGN = "globex.launch_newsletter"
WINDOW = "once"
CONTACTS = 10_000
CREDENTIALS = {
    "postmark": {"server_token": "pm-server-token-crash"},
    "mailgun": {"api_key": "key-mailgun-crash", "webhook_signing_key": "mg-signing-crash"},
    "sendgrid": {"api_key": "SG.crash-suite-key"},
    "resend": {"api_key": "re_crash_suite_key"},
}
ENV = {
    "CRASH_POSTMARK_TOKEN": CREDENTIALS["postmark"]["server_token"],
    "CRASH_MAILGUN_KEY": CREDENTIALS["mailgun"]["api_key"],
    "CRASH_SENDGRID_KEY": CREDENTIALS["sendgrid"]["api_key"],
    "CRASH_RESEND_KEY": CREDENTIALS["resend"]["api_key"],
}
SIMULATORS = {
    "postmark": postmark_sim,
    "mailgun": mailgun_sim,
    "sendgrid": sendgrid_sim,
    "resend": resend_sim,
}
CLIENT_TIMEOUT = 4.0
"""The adapters' read timeout; a simulated timeout holds its answer well past it. Generous,
so that on a loaded two-core machine (two test workers) an answer the simulator did not
hold is never late enough to look like a timeout."""

FAULT_MIX = FaultMix(
    (
        (0.05, Fault(status=429, retry_after=0.02)),
        (0.04, Fault(status=503, retry_after=0.02)),
        (0.01, Fault(status=500, after_processing=True)),
        (0.01, Fault(timeout=CLIENT_TIMEOUT + 3)),
        (0.005, Fault(drop=True)),
        (0.005, Fault(drop=True, after_processing=True)),
    ),
    seed=6,
)
"""The issue's mix: 5% 429, 4% 503, 1% 500, 1% read timeouts, 1% dropped connections."""

FAULT_SEEDS = [int(seed) for seed in os.environ.get("MAILERS_FAULT_SEEDS", "6").split(",")]
"""The fault mix's seeds: each draws other faults for other requests (a soak:
MAILERS_FAULT_SEEDS=1,2,3,4,5,7,8,9). The default seed must draw every kind of fault for
every provider; another seed is held to the promise with whatever faults it drew."""

AMBIGUOUS_FAULTS = {"500_after", "timeout", "drop", "drop_after"}
JOURNAL_FLUSH_ROWS = 700
"""With the journal on, the fault mix's rows reach the warehouse in loads of 700."""

BATCH_SIZE = {"postmark": 50, "sendgrid": 50, "resend": 50, "mailgun": 1000}
"""Small batches for the batch providers, so the mix hits many requests."""

SEND_SCRIPT = """
import sys
from adapters.providers.registry import build_providers
from adapters.settings import load
from tests.test_crash_and_faults import send_once

settings = load(sys.argv[1])
send_once(settings, sys.argv[2], build_providers(settings, "globex"), lookups=False)
"""


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with the demo contacts and segments (~3,300 newsletter recipients)."""
    root = tmp_path_factory.mktemp("crash-seed")
    settings = load(write_config(root))
    seed_warehouse(settings, CONTACTS)
    run_dbt(settings, "run", "--select", "+path:models/segments")
    return settings.warehouse_path


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@dataclass
class Project:
    settings: Settings
    sim: Simulator

    def audience_keys(self) -> dict[str, str]:
        """Message key → final outcome expected class for every recipient of the window."""
        with DuckDBWarehouse(self.settings.warehouse_path, read_only=True) as warehouse:
            rows = warehouse.query(
                "select mailers_message_key as k, mailers_disposition as d "
                "from mailers_work.audience__globex__launch_newsletter"
            ).to_pylist()
        return {row["k"]: row["d"] for row in rows}

    def latest(self) -> dict[str, dict[str, Any]]:
        with DuckDBWarehouse(self.settings.warehouse_path, read_only=True) as warehouse:
            rows = warehouse.query(latest_rows_sql(warehouse)).to_pylist()
        return {row["message_key"]: row for row in rows}

    def statuses(self) -> dict[str, str]:
        return {key: row["status"] for key, row in self.latest().items()}


PACING = {"min_backoff_seconds": 0.02}
"""The mix's 429s each pause the account at least this long (the default second would
make ~170 of them on Mailgun last minutes)."""


def _accounts(base_url: str, primary: str, backup: str | None) -> dict[str, Any]:
    settings = {"base_url": base_url, "timeout_seconds": CLIENT_TIMEOUT}
    accounts: dict[str, Any] = {
        "globex_postmark": {
            "kind": "postmark",
            "credentials": {"server_token": {"env": "CRASH_POSTMARK_TOKEN"}},
            "settings": settings,
            "batch_size": BATCH_SIZE["postmark"],
            "reconcile_absent_after_seconds": 0,
            "pacing": PACING,
        },
        "globex_mailgun": {
            "kind": "mailgun",
            "credentials": {"api_key": {"env": "CRASH_MAILGUN_KEY"}},
            "settings": {**settings, "domain": "mail.globex.test", "concurrency": 8},
            "reconcile_absent_after_seconds": 0,
            "pacing": PACING,
        },
        "globex_sendgrid": {
            "kind": "sendgrid",
            "credentials": {"api_key": {"env": "CRASH_SENDGRID_KEY"}},
            "settings": settings,
            "batch_size": BATCH_SIZE["sendgrid"],
            "pacing": PACING,
        },
        "globex_resend": {
            "kind": "resend",
            "credentials": {"api_key": {"env": "CRASH_RESEND_KEY"}},
            "settings": settings,
            "batch_size": BATCH_SIZE["resend"],
            "pacing": PACING,
        },
    }
    used = [f"globex_{primary}", *([f"globex_{backup}"] if backup else [])]
    return {name: accounts[name] for name in used}


@pytest.fixture
def project(tmp_path: Path, seeded: Path) -> Iterator[Any]:
    """Make a project whose globex workspace sends through ``primary`` (then ``backup``)."""
    simulators: list[Simulator] = []

    def make(
        primary: str,
        backup: str | None = None,
        policy: Callable[[dict[str, Any]], None] | None = None,
        *,
        journal_flush_rows: int | None = None,
    ) -> Project:
        sim = Simulator().start()
        simulators.append(sim)
        for kind in {primary, backup} - {None}:
            SIMULATORS[kind].register(sim, credentials=CREDENTIALS[kind])  # type: ignore[index]

        def mutate(config: dict[str, Any]) -> None:
            globex = config["workspaces"]["globex"]
            globex["provider_accounts"] = _accounts(sim.base_url, primary, backup)
            names = list(globex["provider_accounts"])
            for identity in globex["identities"].values():
                identity["provider_accounts"] = names
            globex["streams"]["lifecycle"]["routing"] = {"strategy": "failover", "accounts": names}
            if policy is not None:
                policy(globex)
            if journal_flush_rows:  # as on a remote warehouse: ledger rows journaled first
                config["ledger"] = {"journal": "on", "flush_rows": journal_flush_rows}

        settings = load(write_config(tmp_path, mutate))
        settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(seeded, settings.warehouse_path)
        return Project(settings, sim)

    yield make
    for sim in simulators:
        sim.stop()


def send_once(settings: Settings, run_id: str, providers: Any, *, lookups: bool) -> SendReport:
    """Resolve the window's audience and send it, as the Dagster assets do."""
    ref = settings.campaign(CAMPAIGN)
    with (
        DuckDBWarehouse(settings.warehouse_path) as opened,
        send_warehouse(opened, settings, run_id) as warehouse,
    ):
        ensure_tables(warehouse)
        ledger = LedgerWriter(warehouse, LedgerContext.of(ref, WINDOW, run_id))
        table = resolve(warehouse, AudienceSpec.of(ref, WINDOW), ledger.settled_keys_sql())
        sender = CampaignSender(
            warehouse,
            SendContext(settings, ref, WINDOW, run_id, UNSUBSCRIBE_KEY),
            providers,
            lookups=message_lookups(settings, ref.workspace) if lookups else None,
        )
        try:
            return sender.run(table)
        finally:
            for provider in providers.values():
                provider.close()


def _ledger_rows(warehouse: DuckDBWarehouse) -> int:
    return int(warehouse.query("select count(*) from mailers.send_ledger").column(0)[0].as_py())


def _providers(project: Project) -> Any:
    return build_providers(project.settings, "globex")


def assert_the_promise_holds(project: Project) -> dict[str, str]:
    """No key accepted twice; ledger ``accepted`` == simulator's; one final outcome each."""
    accepted_at_sim = project.sim.accepted
    assert max(accepted_at_sim.values(), default=0) <= 1, "a message was accepted twice"
    statuses = project.statuses()
    assert {k for k, s in statuses.items() if s == "accepted"} == set(accepted_at_sim)
    recipients = {k for k, d in project.audience_keys().items() if d != "duplicate"}
    assert recipients <= statuses.keys(), "a recipient has no ledger outcome"
    finals = {statuses[k] for k in recipients}
    # render_failed is the template's verdict, never a provider's: it is not about delivery.
    assert finals <= {"accepted", "rejected", "skipped", "render_failed"}, finals
    return statuses


@pytest.mark.parametrize(
    ("primary", "backup", "journal"),
    [
        ("postmark", "mailgun", False),
        ("mailgun", "postmark", False),
        ("sendgrid", "postmark", False),
        ("resend", "postmark", False),
        ("postmark", "mailgun", True),
        ("mailgun", "postmark", True),
    ],
)
@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_a_fault_mix_loses_nothing_and_sends_nothing_twice(
    project: Any, primary: str, backup: str, journal: bool, seed: int
) -> None:
    proj: Project = project(
        primary, backup, journal_flush_rows=JOURNAL_FLUSH_ROWS if journal else None
    )
    proj.sim.mix(primary, dataclasses.replace(FAULT_MIX, seed=seed))

    first = send_once(
        proj.settings, "faulty", build_providers(proj.settings, "globex"), lookups=True
    )

    served = proj.sim.faults_served
    ambiguous = sum(served[kind] for kind in AMBIGUOUS_FAULTS)
    per_request = 1 if primary == "mailgun" else BATCH_SIZE[primary]
    statuses = proj.statuses()
    unknown = {k for k, s in statuses.items() if s == "unknown"}
    accepted_ledger = {k for k, s in statuses.items() if s == "accepted"}
    accepted_sim = set(proj.sim.accepted)
    assert max(proj.sim.accepted.values()) == 1
    if seed == FAULT_MIX.seed:  # CI's seed must hit every kind; a soak's seed may not
        assert served["429"] and served["503"] and ambiguous, served
    # Doubt is no larger than the messages of the requests that really got no answer.
    assert first.counts["unknown"] <= ambiguous * per_request
    # What the ledger says was accepted, was; what the simulator took and the ledger does not
    # know yet is in doubt, never "not sent".
    assert accepted_ledger <= accepted_sim
    assert accepted_sim - accepted_ledger <= unknown
    if primary == "resend":  # every call in doubt was made again under its key
        kept = {r["reason"] for r in proj.latest().values() if r["status"] == "unknown"}
        asked = re.compile(r"in doubt after \d+ attempts under its idempotency key")
        assert all(asked.search(reason) for reason in kept), kept
        if seed == FAULT_MIX.seed:  # and on CI's seed every one was answered
            assert first.counts["unknown"] == 0, served

    proj.sim.mix(primary, None)
    second = send_once(
        proj.settings, "clean", build_providers(proj.settings, "globex"), lookups=True
    )

    assert second.counts["not_sent"] == 0
    if primary in ("postmark", "mailgun"):  # the provider can be asked: no doubt is left
        left = {k: r for k, r in proj.latest().items() if r["status"] == "unknown"}
        assert second.counts["still_unknown"] == 0, (left, second.reconciled)
        statuses = assert_the_promise_holds(proj)
        assert "unknown" not in statuses.values()
    else:  # SendGrid and Resend cannot be asked: doubt stays, reported, never re-sent
        assert max(proj.sim.accepted.values()) == 1
        left = {k for k, s in proj.statuses().items() if s == "unknown"}
        assert left == unknown and second.counts["still_unknown"] == len(left)
    print(
        f"\n{primary}: {len(proj.audience_keys())} recipients, {len(proj.sim.accepted)} "
        f"accepted, faults {dict(served)}, "
        f"unknown after the faulty run {first.counts['unknown']}, "
        f"then reconciled accepted/not sent {second.counts['reconciled_accepted']}/"
        f"{second.counts['reconciled_not_sent']}, "
        f"failed over {first.accounts.get(f'globex_{backup}', 0)} ({first.down_accounts}), "
        "duplicates 0"
    )


def test_caps_hold_under_a_fault_mix_and_what_they_held_back_goes_out_the_next_day(
    project: Any, fixed_clock: FixedClock
) -> None:
    caps = {"globex_postmark": 1200, "globex_mailgun": 600}

    def policy(globex: dict[str, Any]) -> None:
        accounts = globex["provider_accounts"]
        accounts["globex_postmark"]["warmup"] = {"start_date": "2026-12-07", "daily": [1200]}
        accounts["globex_mailgun"]["pacing"] = {"daily_cap": 600}

    fixed_clock.set(datetime(2026, 12, 7, 9, tzinfo=UTC))
    proj: Project = project("postmark", "mailgun", policy)
    proj.sim.mix("postmark", FAULT_MIX)
    first = send_once(proj.settings, "faulty", _providers(proj), lookups=True)

    assert max(proj.sim.accepted.values()) == 1
    latest = proj.latest()
    handed = Counter(
        row["provider_account"]
        for row in latest.values()
        if row["status"] in ("accepted", "unknown", "rejected", "dispatching")
    )
    assert all(handed[name] <= cap for name, cap in caps.items()), handed
    assert handed["globex_postmark"] >= caps["globex_postmark"] - first.counts["not_sent"]
    deferred = [row for row in latest.values() if row["status"] == "deferred"]
    assert len(deferred) == first.counts["deferred"] > 0
    assert {row["eligible_at"] for row in deferred} == {datetime(2026, 12, 8)}
    accepted_ledger = {k for k, r in latest.items() if r["status"] == "accepted"}
    unknown = {k for k, r in latest.items() if r["status"] == "unknown"}
    assert accepted_ledger <= set(proj.sim.accepted)
    assert set(proj.sim.accepted) - accepted_ledger <= unknown

    # Next day, faults gone: the deferred and retryable ones go out; nothing twice.
    proj.sim.mix("postmark", None)
    fixed_clock.set(datetime(2026, 12, 8, 9, tzinfo=UTC))
    second = send_once(proj.settings, "clean", _providers(proj), lookups=True)
    assert second.counts["not_sent"] == 0 and second.counts["still_unknown"] == 0
    statuses = assert_the_promise_holds(proj)
    assert "deferred" not in statuses.values()
    print(
        f"\ncaps under faults: handed over day 1 {dict(handed)} (caps {caps}), deferred "
        f"{first.counts['deferred']}, day 2 accepted {second.counts['accepted']}, duplicates 0"
    )


KILL_TRIALS = int(os.environ.get("MAILERS_KILL_TRIALS", "20"))
"""SIGKILL trials, each at its own random moment (MAILERS_KILL_TRIALS=200 runs a longer soak)."""


@pytest.mark.parametrize("trial", range(KILL_TRIALS))
def test_a_send_killed_at_a_random_moment_resumes_without_duplicates(
    project: Any, trial: int
) -> None:
    primary = "postmark" if trial % 2 == 0 else "mailgun"
    journal = trial % 4 >= 2  # half the trials journal their ledger rows (both providers)
    in_flight = BATCH_SIZE["postmark"] if primary == "postmark" else 8  # Mailgun's concurrency
    # Journaled rows reach the warehouse only when the send reads the ledger or ends: a
    # kill leaves every row of the send proper in the journal alone.
    proj: Project = project(primary, journal_flush_rows=10**9 if journal else None)
    # Below the ~3,100 messages the simulator accepts in all, so every trial is a real kill.
    threshold = random.Random(trial).randrange(0, 2800)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", SEND_SCRIPT, str(proj.settings.path), f"doomed-{trial}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if sum(proj.sim.accepted.values()) >= threshold:
            break
        time.sleep(0.005)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    returncode = child.wait(timeout=60)
    stderr = child.stderr.read().decode() if child.stderr else ""
    assert returncode == -signal.SIGKILL, stderr

    left_in_journal = list(journal_dir(proj.settings.data_dir).glob("*.send_ledger.arrows"))
    # A kill before the send opened its journal (threshold 0) leaves none.
    assert len(left_in_journal) <= (1 if journal else 0)
    with DuckDBWarehouse(proj.settings.warehouse_path) as warehouse:
        resolved = warehouse.columns("mailers_work", "audience__globex__launch_newsletter")
        journaled_dispatches = sum(
            read_journal(path)["status"].to_pylist().count("dispatching")
            for path in left_in_journal
        )
        stored_before = _ledger_rows(warehouse)
        # The dry run loads the killed run's journal first, then shows the doubt.
        planned = (
            plan(warehouse, proj.settings, proj.settings.campaign(CAMPAIGN), WINDOW)
            if resolved
            else None
        )
        if journal and resolved and threshold:
            # The kill left rows only the journal had, and the dry run loaded them.
            assert journaled_dispatches > 0
            assert _ledger_rows(warehouse) > stored_before
    assert list(journal_dir(proj.settings.data_dir).glob("*.arrows")) == []
    before = proj.statuses()
    dispatching = {k for k, s in before.items() if s == "dispatching"}
    assert len(dispatching) <= in_flight, f"{len(dispatching)} in doubt, {in_flight} in flight"
    assert max(proj.sim.accepted.values(), default=0) <= 1
    # Every message the simulator took is recorded (accepted, or in doubt): none is lost
    # with a journal that never reached the warehouse.
    recorded = {k for k, s in before.items() if s in ("accepted", "dispatching")}
    assert set(proj.sim.accepted) <= recorded
    if planned is not None:
        assert planned.counts.get("in_doubt", 0) == len(dispatching)

    resumed = send_once(proj.settings, f"resume-{trial}", _providers(proj), lookups=True)

    assert resumed.counts["reconciled_unknown"] == len(dispatching)
    settled = resumed.counts["reconciled_accepted"] + resumed.counts["reconciled_not_sent"]
    assert settled == len(dispatching)
    assert resumed.counts["still_unknown"] == 0
    statuses = assert_the_promise_holds(proj)
    assert "unknown" not in statuses.values()
    print(
        f"\ntrial {trial} ({primary}, journal {journal}, {journaled_dispatches} dispatches "
        f"journaled): SIGKILL once {threshold} were accepted, "
        f"in doubt {len(dispatching)}, settled accepted "
        f"{resumed.counts['reconciled_accepted']} / never sent "
        f"{resumed.counts['reconciled_not_sent']}, duplicates 0"
    )
