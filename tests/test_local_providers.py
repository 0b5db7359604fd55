"""The example config end to end against the provider simulator over loopback.

Postmark, SendGrid and Resend post signed webhooks to the receiver, Mailgun is polled through
its events API; all four arrive in the same marts. Forged webhooks are refused unlanded.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from adapters.settings import load
from adapters.simulator.local import LocalProviders, demo_credentials
from mailers.config import Settings
from mailers.errors import ConfigError
from mailers.ingest import landed_files
from mailers.landing import read_cursor
from orchestration.defs.build import build_definitions
from tests.conftest import REPO, query, seed_warehouse


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("simulated")
    config = yaml.safe_load((REPO / "mailers.yaml").read_text())
    config["data_dir"] = str(root / "data")
    config["dbt_project_dir"] = str(REPO / "dbt_project")
    config["templates_dir"] = str(REPO / "templates")
    base_url = f"http://127.0.0.1:{_free_port()}"
    for workspace in config["workspaces"].values():
        for account in workspace["provider_accounts"].values():
            account["settings"]["base_url"] = base_url
    path = root / "mailers.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.MonkeyPatch.context() as patch:
        settings = load(path)
        for workspace in settings.config.workspaces.values():
            for account in workspace.provider_accounts.values():
                for ref in account.credentials.values():
                    patch.delenv(ref.env, raising=False)
        keys = demo_credentials(settings)
        seed_warehouse(settings, 400)
        with LocalProviders(settings, keys) as local:
            result = (
                build_definitions(str(path))
                .resolve_job_def("mailers_pipeline")
                .execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
            )
            assert result.success
            forged = httpx.post(
                local.receiver.url_for("acme", "acme_postmark"),  # type: ignore[union-attr]
                content=b'{"RecordType": "Delivery", "MessageID": "x"}',
                headers={"Authorization": "Basic bm90OnJpZ2h0"},
            )
            yield settings, local, forged


def test_every_provider_reports_deliveries_into_the_marts(simulated: Any) -> None:
    settings: Settings = simulated[0]
    rows = query(
        settings,
        "select provider, provider_account, sum(sent) as sent, sum(delivered) as delivered, "
        "sum(opens) as opens from marts.fct_deliverability_daily group by all",
    )
    by_account = {row["provider_account"]: row for row in rows}
    assert set(by_account) == {"acme_postmark", "acme_mailgun", "globex_sendgrid", "globex_resend"}
    for row in by_account.values():
        assert row["sent"] > 0 and 0 < row["delivered"] <= row["sent"] and row["opens"] > 0
    assert {row["provider"] for row in rows} == {"postmark", "mailgun", "sendgrid", "resend"}


def test_webhooks_were_verified_and_landed_and_mailgun_was_polled(simulated: Any) -> None:
    settings, local, _ = simulated
    assert local.receiver.landed > 0
    kinds = {(f.kind, f.account) for f in landed_files(settings.landing_dir)}
    assert kinds == {
        ("postmark", "acme_postmark"),
        ("sendgrid", "globex_sendgrid"),
        ("resend", "globex_resend"),
        ("mailgun", "acme_mailgun"),
    }
    assert read_cursor(settings.landing_dir, "mailgun", "acme_mailgun")
    assert read_cursor(settings.landing_dir, "postmark", "acme_postmark") is None
    audit = query(
        settings,
        "select sum(events_polled) as polled, sum(poll_errors) as errors "
        "from marts.fct_send_audit where action = 'ingest_events'",
    )
    assert audit[0]["polled"] > 0 and audit[0]["errors"] == 0


def test_a_forged_webhook_is_refused_and_nothing_lands(simulated: Any) -> None:
    settings, local, forged = simulated
    assert forged.status_code == 401
    assert local.receiver.rejected == 1
    bodies = b"".join(
        f.path.read_bytes() for f in landed_files(settings.landing_dir) if f.kind == "postmark"
    )
    assert b'"MessageID":"x"' not in bodies


def test_every_accepted_message_carried_its_key_to_the_provider(simulated: Any) -> None:
    settings, local, _ = simulated
    accepted = query(
        settings,
        "select provider, count(*) as n from mailers.send_ledger where status = 'accepted' "
        "group by provider",
    )
    assert {row["provider"] for row in accepted} == {"postmark", "mailgun", "sendgrid", "resend"}
    store = local.simulator.store
    carried = {
        "postmark": [(m["metadata"], m["headers"]) for m in store["postmark"]["messages"]],
        "resend": [(m["tags"], m["headers"]) for m in store["resend"]["messages"]],
    }
    for provider, messages in carried.items():
        keys = {metadata["mailers_message_key"] for metadata, _ in messages}
        assert all(headers["X-Mailers-Message-Key"] in keys for _, headers in messages)
        ledger = {
            row["message_key"]
            for row in query(
                settings,
                "select message_key from mailers.send_ledger where status = 'accepted' "
                f"and provider = '{provider}'",
            )
        }
        assert keys == ledger, provider
    assert max(local.simulator.accepted.values()) == 1


def test_resend_calls_carried_their_idempotency_key_into_the_ledger(simulated: Any) -> None:
    settings, local, _ = simulated
    sent = {
        m["tags"]["mailers_message_key"]: m["idempotency_key"]
        for m in local.simulator.store["resend"]["messages"]
    }
    rows = query(
        settings,
        "select message_key, batch_id from mailers.send_ledger where provider = 'resend' "
        "and status = 'accepted'",
    )
    assert rows and {row["message_key"]: row["batch_id"] for row in rows} == sent
    assert all(key.startswith("mailers-") for key in sent.values())


def test_credentials_never_reach_the_warehouse(simulated: Any) -> None:
    settings, _, _ = simulated
    values = [
        ref.resolve("test")
        for workspace in settings.config.workspaces.values()
        for account in workspace.provider_accounts.values()
        for ref in account.credentials.values()
    ]
    tables = query(
        settings,
        "select table_schema || '.' || table_name as name from information_schema.tables "
        "where table_schema in ('mailers', 'marts', 'staging')",
    )
    assert values and len(tables) > 8
    for table in tables:
        text = repr(query(settings, f"select * from {table['name']}"))
        assert not [value for value in values if value in text], table["name"]


def test_a_busy_simulator_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = yaml.safe_load((REPO / "mailers.yaml").read_text())
        config["data_dir"] = str(tmp_path / "data")
        config["dbt_project_dir"] = str(REPO / "dbt_project")
        config["templates_dir"] = str(REPO / "templates")
        for workspace in config["workspaces"].values():
            for account in workspace["provider_accounts"].values():
                account["settings"]["base_url"] = f"http://127.0.0.1:{port}"
        path = tmp_path / "mailers.yaml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(
            ConfigError, match=f"cannot start the provider simulator on http://127.0.0.1:{port}"
        ):
            LocalProviders(load(path)).__enter__()


def test_the_shipped_domain_route_and_warm_up_curve_hold(simulated: Any) -> None:
    settings: Settings = simulated[0]
    rows = query(
        settings,
        "select recipient, provider_account, route, identity from marts.fct_messages "
        "where workspace = 'globex' and ledger_status = 'accepted'",
    )
    corporate = [r for r in rows if r["recipient"].endswith("@corp.example.net")]
    assert corporate
    assert {(r["provider_account"], r["route"]) for r in corporate} == {
        ("globex_sendgrid", "domain route 0 for corp.example.net")
    }
    assert {r["route"] for r in rows if r not in corporate} <= {"weighted draw"}
    started = query(settings, "select owner_kind, owner from mailers.warmup_starts")
    assert started == [{"owner_kind": "identity", "owner": "globex_team"}]
    assert 0 < sum(r["identity"] == "globex_team" for r in rows) <= 200
