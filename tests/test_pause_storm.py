"""A bounce storm through the provider simulator trips the automatic pause mid-send.

The shipped config against the simulator over loopback (SendGrid and Resend for globex,
Postmark and Mailgun for acme), as ``mailers demo`` runs it: the simulator posts each
call's signed webhooks to the receiver, which lands them before the call returns. The
globex list's bounce domain (about 3% hard bounces) is a storm for a pause level of 2%: the
rules, checked before every provider batch from the landed feedback, pause
``globex.lifecycle`` after about a hundred messages, nothing of it is handed over after the
pause, and acme, in the same run, sends everything.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import dagster as dg
import pytest
import yaml

from adapters.settings import load
from adapters.simulator.local import LocalProviders, demo_credentials
from orchestration.defs.build import build_definitions
from tests.conftest import REPO, query, run_dbt, seed_warehouse


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(root: Path) -> Path:
    config = yaml.safe_load((REPO / "mailers.yaml").read_text())
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    base_url = f"http://127.0.0.1:{_free_port()}"
    for name, workspace in config["workspaces"].items():
        for account in workspace["provider_accounts"].values():
            account["settings"]["base_url"] = base_url
            account["batch_size"] = 20
        workspace["pause_rules"] = {
            "enabled": name == "globex",
            "levels": ["stream"],
            "min_volume": 100,
            "hard_bounce": {"warn": 0.01, "pause": 0.02},
            "complaint": {"warn": 0.5, "pause": 0.6},  # this test is about bounces
        }
        for identity in workspace["identities"].values():
            identity.pop("warmup", None)  # every globex recipient may go today
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_bounce_storm_pauses_its_stream_mid_send_and_other_workspaces_keep_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path)
    settings = load(path)
    for workspace in settings.config.workspaces.values():
        for account in workspace.provider_accounts.values():
            for ref in account.credentials.values():
                monkeypatch.delenv(ref.env, raising=False)
    keys = demo_credentials(settings)
    seed_warehouse(settings, 1000)
    run_dbt(settings, "run", "--select", "+path:models/segments")
    with LocalProviders(settings, keys) as local:
        defs = build_definitions(str(path))
        result = defs.resolve_job_def("mailers_pipeline").execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )
        assert local.simulator is not None
        accepted_at_simulator = sum(local.simulator.accepted.values())

    failed = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed == ["globex__launch_newsletter__sends"], failed
    (pause,) = query(settings, "select scope, automatic, evidence, recorded_at from mailers.pauses")
    assert pause["scope"] == "stream:globex.lifecycle" and pause["automatic"]
    evidence = json.loads(pause["evidence"])["findings"][0]
    assert evidence["metric"] == "hard_bounce" and evidence["rate"] >= 0.02
    assert "select" in evidence["sql"].lower() and evidence["window_hours"] in (1, 24)

    latest = query(
        settings,
        "select workspace, status, count(*) as n from (select *, row_number() over "
        "(partition by message_key order by recorded_at desc) as rn from mailers.send_ledger) "
        "where rn = 1 group by workspace, status",
    )
    by = {(r["workspace"], r["status"]): r["n"] for r in latest}
    # Stopped mid-send: some of globex left, the rest is held, nothing is in doubt.
    assert by.get(("globex", "accepted"), 0) >= 100
    assert by.get(("globex", "paused"), 0) > 50
    assert ("globex", "unknown") not in by and ("globex", "dispatching") not in by
    # Nothing of the paused stream was handed over once the pause was written.
    late = query(
        settings,
        "select count(*) as n from mailers.send_ledger where workspace = 'globex' "
        f"and status = 'dispatching' and recorded_at > '{pause['recorded_at']}'",
    )
    assert late == [{"n": 0}]
    # acme, in the same run, sent everything it had.
    assert by.get(("acme", "accepted"), 0) > 50 and ("acme", "paused") not in by
    accepted_in_ledger = sum(n for (_, status), n in by.items() if status == "accepted")
    assert accepted_at_simulator == accepted_in_ledger
    print(
        f"\nglobex: {by[('globex', 'accepted')]} accepted, {by[('globex', 'paused')]} paused "
        f"by {evidence['metric']} {evidence['rate']:.1%} of {evidence['volume']}; acme "
        f"accepted {by[('acme', 'accepted')]}"
    )
