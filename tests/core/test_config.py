"""Loading mailers.yaml: the example loads, and every mistake is reported precisely."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.settings import load
from mailers.config import CampaignRef, FailoverRouting, StreamKind, WeightedRouting
from mailers.config_loader import load_settings
from mailers.errors import ConfigError, SecretMissing
from mailers.secrets import SecretRef

from .support import EXAMPLE_CONFIG, ConfigEditor


def acme(document: dict[str, Any]) -> dict[str, Any]:
    return document["workspaces"]["acme"]


def pro_tips(document: dict[str, Any]) -> dict[str, Any]:
    return acme(document)["campaigns"]["pro_tips"]


def config_error(path: Path) -> str:
    """Load ``path`` through the adapter-aware loader and return the ConfigError message."""
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)


def test_example_config_loads_with_both_workspaces() -> None:
    settings = load(EXAMPLE_CONFIG, environ={})

    assert list(settings.config.workspaces) == ["acme", "globex"]
    assert settings.path == EXAMPLE_CONFIG
    data_dir = (EXAMPLE_CONFIG.parent / ".." / ".mailers" / "sandbox").resolve()
    assert settings.data_dir == data_dir
    assert settings.warehouse_path == data_dir / "warehouse.duckdb"
    assert len(settings.config_hash) == 64
    acme_streams = settings.config.workspaces["acme"].streams
    assert isinstance(acme_streams[StreamKind.LIFECYCLE].routing, WeightedRouting)
    assert isinstance(acme_streams[StreamKind.TRANSACTIONAL].routing, FailoverRouting)


def test_campaign_lookup_by_qualified_and_bare_name() -> None:
    settings = load(EXAMPLE_CONFIG)

    ref = settings.campaign("acme.pro_tips")
    assert isinstance(ref, CampaignRef)
    assert (ref.workspace, ref.name, ref.qualified_name) == ("acme", "pro_tips", "acme.pro_tips")
    assert ref.config.segment == "seg_acme_active_pro"
    assert ref.config.identities == ["acme_news"]
    assert settings.campaign("launch_newsletter").config.identities == [
        "globex_news",
        "globex_team",
    ]
    assert [c.qualified_name for c in settings.campaigns()] == [
        "acme.pro_tips",
        "globex.launch_newsletter",
    ]


def test_unknown_campaign_raises_key_error_listing_known_ones() -> None:
    settings = load(EXAMPLE_CONFIG)

    with pytest.raises(KeyError) as info:
        settings.campaign("acme.nope")

    message = str(info.value)
    assert "acme.nope" in message
    assert "acme.pro_tips" in message
    assert "globex.launch_newsletter" in message


def test_core_loader_loads_the_example_without_adapter_checks() -> None:
    settings = load_settings(EXAMPLE_CONFIG)
    assert settings.config_hash == load(EXAMPLE_CONFIG).config_hash


def test_copied_example_loads(config_copy: Path) -> None:
    settings = load(config_copy, environ={})
    assert settings.templates_dir == config_copy.parent / "templates"
    assert settings.data_dir == (config_copy.parent / ".." / ".mailers" / "sandbox").resolve()


def test_unknown_key(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d).update(colour="red"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips.colour" in message
    assert "unknown key" in message


def test_literal_credential_is_refused_without_echoing_it(edit_config: ConfigEditor) -> None:
    path = edit_config(
        lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"].update(
            credentials={"api_key": "sk-live-do-not-print"}
        )
    )

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.provider_accounts.acme_sandbox_a.credentials.api_key" in message
    assert "SecretRef" in message
    assert "sk-live-do-not-print" not in message


def test_credential_as_env_reference_is_accepted(edit_config: ConfigEditor) -> None:
    path = edit_config(
        lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"].update(
            credentials={"api_key": {"env": "ACME_API_KEY"}}
        )
    )

    # The core loader: the adapter checks refuse the key, since sandbox reads no credentials.
    account = load_settings(path).config.workspaces["acme"].provider_accounts["acme_sandbox_a"]

    assert account.credentials["api_key"] == SecretRef(env="ACME_API_KEY")


def test_stream_routing_to_unknown_account(edit_config: ConfigEditor) -> None:
    path = edit_config(
        lambda d: acme(d)["streams"]["transactional"]["routing"].update(
            accounts=["acme_sandbox_b", "ghost_account"]
        )
    )

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme" in message
    assert "streams.transactional.routing" in message
    assert "unknown provider account 'ghost_account'" in message


def test_identity_not_allowed_on_an_account_its_stream_routes_to(
    edit_config: ConfigEditor,
) -> None:
    def change(d: dict[str, Any]) -> None:
        acme(d)["provider_accounts"]["acme_sandbox_c"] = {"kind": "sandbox"}
        acme(d)["streams"]["lifecycle"]["routing"]["weights"]["acme_sandbox_c"] = 10

    message = config_error(edit_config(change))

    assert "workspaces.acme" in message
    assert "campaigns.pro_tips" in message
    assert "identity 'acme_news' may not be sent by provider account 'acme_sandbox_c'" in message
    assert "'lifecycle'" in message


def test_missing_segment_model(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d).update(segment="seg_does_not_exist"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips.segment" in message
    assert "'seg_does_not_exist' does not exist" in message


def test_missing_template_directory(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d).update(template="no_such_template"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips.template" in message
    assert "no_such_template" in message
    assert "does not exist" in message


def test_template_directory_missing_a_part(config_copy: Path) -> None:
    (config_copy.parent / "templates" / "pro_tips" / "body.txt").unlink()

    message = config_error(config_copy)

    assert "workspaces.acme.campaigns.pro_tips.template" in message
    assert "missing body.txt" in message


def test_template_syntax_error_names_file_and_line(config_copy: Path) -> None:
    body = config_copy.parent / "templates" / "pro_tips" / "body.html"
    body.write_text("<p>\n  Hello {{ first_name }}\n  {% if %}\n</p>\n")

    message = config_error(config_copy)

    assert str(config_copy) in message
    assert "workspaces.acme.campaigns.pro_tips.template" in message
    assert f"{body}, line 3" in message


def test_bad_cron_expression(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d)["schedule"].update(cron="61 9 * * 1"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips.schedule.cron" in message
    assert "'61 9 * * 1' is not a five-field cron expression" in message


def test_unknown_time_zone(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d)["schedule"].update(timezone="Mars/Olympus_Mons"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips.schedule.timezone" in message
    assert "unknown time zone 'Mars/Olympus_Mons'" in message


def test_invalid_yaml_reports_a_line_number(config_copy: Path) -> None:
    lines = config_copy.read_text().splitlines()
    lines.insert(4, "  misindented: value")  # becomes line 5, under a scalar key
    config_copy.write_text("\n".join(lines) + "\n")

    message = config_error(config_copy)

    assert message.startswith(f"{config_copy}: line 5, column")
    assert "not valid YAML" in message


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "mailers.yaml"
    path.write_text("- just\n- a list\n")

    assert "must be a mapping" in config_error(path)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    message = config_error(path)

    assert str(path) in message
    assert "not found" in message


def test_unknown_provider_kind_lists_available_kinds(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"].update(kind="pony"))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.provider_accounts.acme_sandbox_a" in message
    assert "unknown provider kind 'pony'" in message
    assert "available: mailgun, postmark, resend, sandbox, sendgrid, ses, smtp" in message


def test_core_loader_without_account_check_accepts_unknown_kind(
    edit_config: ConfigEditor,
) -> None:
    path = edit_config(lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"].update(kind="pony"))

    assert load_settings(path).config.workspaces["acme"].provider_accounts[
        "acme_sandbox_a"
    ].kind == ("pony")


def test_unknown_sandbox_setting_key(edit_config: ConfigEditor) -> None:
    path = edit_config(
        lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"]["settings"].update(colour=1)
    )

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.provider_accounts.acme_sandbox_a" in message
    assert "settings.colour: unknown key" in message


def test_click_rate_above_open_rate_in_sandbox_settings(edit_config: ConfigEditor) -> None:
    path = edit_config(
        lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"]["settings"].update(
            open_rate=0.2, click_rate=0.5
        )
    )

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.provider_accounts.acme_sandbox_a" in message
    assert "click_rate cannot exceed open_rate" in message


def test_model_level_sandbox_settings_error_is_formatted_like_core_errors(
    edit_config: ConfigEditor,
) -> None:
    path = edit_config(
        lambda d: acme(d)["provider_accounts"]["acme_sandbox_a"]["settings"].update(
            open_rate=0.2, click_rate=0.5
        )
    )

    message = config_error(path)

    assert "Value error," not in message
    assert "settings.:" not in message


def test_identity_and_identity_pool_together(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d).update(identity_pool=["acme_news"]))

    message = config_error(path)

    assert str(path) in message
    assert "workspaces.acme.campaigns.pro_tips" in message
    assert "give exactly one of 'identity' or 'identity_pool'" in message


def test_neither_identity_nor_identity_pool(edit_config: ConfigEditor) -> None:
    path = edit_config(lambda d: pro_tips(d).pop("identity"))

    assert "give exactly one of 'identity' or 'identity_pool'" in config_error(path)


def test_several_schema_problems_are_reported_together(edit_config: ConfigEditor) -> None:
    def change(d: dict[str, Any]) -> None:
        pro_tips(d)["colour"] = "red"
        d["workspaces"]["globex"]["provider_accounts"]["globex_sandbox"]["credentials"] = {
            "token": "literal"
        }

    path = edit_config(change)
    message = config_error(path)
    lines = message.splitlines()

    assert any("workspaces.acme.campaigns.pro_tips.colour: unknown key" in line for line in lines)
    assert any(
        "workspaces.globex.provider_accounts.globex_sandbox.credentials.token" in line
        for line in lines
    )
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_several_file_and_account_problems_are_reported_together(
    edit_config: ConfigEditor,
) -> None:
    def change(d: dict[str, Any]) -> None:
        pro_tips(d)["segment"] = "seg_missing"
        pro_tips(d)["schedule"] = {"cron": "not a cron", "timezone": "Nowhere/Land"}
        campaign = d["workspaces"]["globex"]["campaigns"]["launch_newsletter"]
        campaign["template"] = "missing_template"
        d["workspaces"]["globex"]["provider_accounts"]["globex_sandbox"]["kind"] = "pony"

    path = edit_config(change)
    message = config_error(path)
    lines = message.splitlines()

    assert len(lines) == 5
    assert all(line.startswith(f"{path}: ") for line in lines)
    for fragment in (
        "workspaces.acme.campaigns.pro_tips.segment",
        "workspaces.acme.campaigns.pro_tips.schedule.cron",
        "workspaces.acme.campaigns.pro_tips.schedule.timezone",
        "workspaces.globex.campaigns.launch_newsletter.template",
        "workspaces.globex.provider_accounts.globex_sandbox: kind",
    ):
        assert any(fragment in line for line in lines), fragment


def test_invalid_names_are_refused(edit_config: ConfigEditor) -> None:
    def change(d: dict[str, Any]) -> None:
        d["workspaces"]["Bad-Name"] = d["workspaces"].pop("globex")

    message = config_error(edit_config(change))

    assert "workspaces.Bad-Name" in message


def test_mailers_config_env_selects_the_file(config_copy: Path) -> None:
    settings = load(None, environ={"MAILERS_CONFIG": str(config_copy)})

    assert settings.path == config_copy


def test_mailers_config_env_pointing_nowhere_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere.yaml"

    with pytest.raises(ConfigError, match="MAILERS_CONFIG") as info:
        load(None, environ={"MAILERS_CONFIG": str(missing)})

    assert str(missing) in str(info.value)


def test_mailers_config_from_process_environment(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILERS_CONFIG", str(config_copy))

    assert load().path == config_copy


def test_default_config_path_is_cwd_mailers_yaml(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILERS_CONFIG", raising=False)
    monkeypatch.chdir(config_copy.parent)

    assert load().path == config_copy


def test_mailers_data_dir_env_overrides_data_dir(config_copy: Path, tmp_path: Path) -> None:
    data = tmp_path / "elsewhere"

    settings = load(config_copy, environ={"MAILERS_DATA_DIR": str(data)})

    assert settings.data_dir == data
    assert settings.warehouse_path == data / "warehouse.duckdb"
    assert settings.outbox_dir == data / "outbox"
    assert settings.landing_dir == data / "landing"


def test_config_hash_is_stable(config_copy: Path) -> None:
    assert load(config_copy).config_hash == load(config_copy).config_hash


def test_config_hash_changes_when_a_template_changes(config_copy: Path) -> None:
    before = load(config_copy).config_hash
    subject = config_copy.parent / "templates" / "pro_tips" / "subject.txt"
    subject.write_text(subject.read_text() + " (updated)")

    assert load(config_copy).config_hash != before


def test_config_hash_changes_when_the_config_changes(
    config_copy: Path, edit_config: ConfigEditor
) -> None:
    before = load(config_copy).config_hash
    edit_config(lambda d: pro_tips(d).update(description="changed"))

    assert load(config_copy).config_hash != before


def test_secret_ref_resolves_from_environ() -> None:
    ref = SecretRef(env="MAILERS_TEST_KEY")

    assert ref.resolve("a test", environ={"MAILERS_TEST_KEY": "s3cret"}) == "s3cret"


@pytest.mark.parametrize("environ", [{}, {"MAILERS_TEST_KEY": ""}])
def test_secret_missing_names_the_variable_and_the_use(environ: dict[str, str]) -> None:
    ref = SecretRef(env="MAILERS_TEST_KEY")

    with pytest.raises(SecretMissing) as info:
        ref.resolve("unsubscribe.signing_key", environ=environ)

    assert "MAILERS_TEST_KEY" in str(info.value)
    assert "unsubscribe.signing_key" in str(info.value)


def test_secret_missing_never_includes_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILERS_OTHER_SECRET", "hunter2-value")
    monkeypatch.delenv("MAILERS_TEST_KEY", raising=False)
    ref = SecretRef(env="MAILERS_TEST_KEY")

    with pytest.raises(SecretMissing) as info:
        ref.resolve("something")

    assert "hunter2-value" not in str(info.value)


def test_secret_ref_repr_names_only_the_variable() -> None:
    assert repr(SecretRef(env="API_KEY")) == "SecretRef(env='API_KEY')"


@pytest.mark.parametrize("name", ["1ABC", "A-B", "has space", ""])
def test_secret_ref_rejects_bad_env_names(name: str) -> None:
    with pytest.raises(ValidationError):
        SecretRef(env=name)


def test_provider_account_names_are_unique_across_workspaces(edit_config: ConfigEditor) -> None:
    def reuse(document: dict[str, Any]) -> None:
        acme = document["workspaces"]["acme"]["provider_accounts"]
        document["workspaces"]["globex"]["provider_accounts"]["acme_sandbox_a"] = acme[
            "acme_sandbox_a"
        ]

    path = edit_config(reuse)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert (
        f"{path}: workspaces.globex.provider_accounts.acme_sandbox_a: provider account names "
        "must be unique across workspaces (also in 'acme')"
    ) in str(info.value)


def test_a_postgres_warehouse_takes_its_password_from_the_environment(
    edit_config: ConfigEditor,
) -> None:
    from mailers.preflight import environment_references, run_references, unset

    def postgres(document: dict[str, Any]) -> None:
        document["warehouse"] = {
            "kind": "postgres",
            "host": "db.internal",
            "database": "analytics",
            "user": "mailers",
            "password": {"env": "MAILERS_PG_PASSWORD"},
        }

    settings = load(edit_config(postgres))
    assert settings.config.warehouse.kind == "postgres"
    refs = [r for r in environment_references(settings) if r.path == "warehouse.password"]
    assert [(r.env, r.needed) for r in refs] == [("MAILERS_PG_PASSWORD", True)]
    assert refs[0] in run_references(settings, settings.campaigns()[:1])
    assert refs[0] in unset(refs, environ={})
    with pytest.raises(ConfigError, match=r"warehouse\.kind is 'postgres'"):
        _ = settings.warehouse_path


def test_a_snowflake_warehouse_loads_with_its_secret_in_the_environment(
    edit_config: ConfigEditor,
) -> None:
    from mailers.preflight import environment_references
    from mailers.snowflake_config import SnowflakeWarehouseConfig

    def snowflake(document: dict[str, Any]) -> None:
        document["warehouse"] = {
            "kind": "snowflake",
            "account": "myorg-acct",
            "user": "MAILERS",
            "database": "ANALYTICS",
            "schema": "MAILERS_SESSION",
            "password": {"env": "MAILERS_SF_PASSWORD"},
        }

    settings = load(edit_config(snowflake))
    warehouse = settings.config.warehouse
    assert isinstance(warehouse, SnowflakeWarehouseConfig)
    assert warehouse.connect_arguments({"MAILERS_SF_PASSWORD": "pw"})["schema"] == (
        "MAILERS_SESSION"
    )
    refs = [r for r in environment_references(settings) if r.path == "warehouse.password"]
    assert [(r.env, r.needed) for r in refs] == [("MAILERS_SF_PASSWORD", True)]
    with pytest.raises(ConfigError, match=r"warehouse\.kind is 'snowflake'"):
        _ = settings.warehouse_path


def test_a_snowflake_key_pair_is_among_the_references_every_run_needs(
    edit_config: ConfigEditor,
) -> None:
    from mailers.preflight import environment_references, run_references, unset

    def key_pair(document: dict[str, Any]) -> None:
        document["warehouse"] = {
            "kind": "snowflake",
            "account": "myorg-acct",
            "user": "MAILERS",
            "database": "ANALYTICS",
            "private_key": {"env": "MAILERS_SF_KEY"},
            "private_key_passphrase": {"env": "MAILERS_SF_KEY_PASSPHRASE"},
        }

    settings = load(edit_config(key_pair))
    refs = [r for r in environment_references(settings) if r.path.startswith("warehouse.")]
    assert [(r.path, r.env) for r in refs] == [
        ("warehouse.private_key", "MAILERS_SF_KEY"),
        ("warehouse.private_key_passphrase", "MAILERS_SF_KEY_PASSPHRASE"),
    ]
    needed = run_references(settings, settings.campaigns()[:1])
    assert all(ref in needed for ref in refs)
    assert unset(refs, environ={"MAILERS_SF_KEY": "pem"}) == refs[1:]


@pytest.mark.parametrize(
    ("warehouse", "expected"),
    [
        ({"kind": "snowflake", "account": "x"}, r"warehouse\.snowflake\.user: .*[Ff]ield required"),
        (
            {"kind": "snowflake", "account": "x", "user": "u", "database": "D"},
            r"warehouse\.snowflake: .*exactly one of password, private_key or private_key_file",
        ),
        (
            {
                "kind": "snowflake",
                "account": "x",
                "user": "u",
                "database": "D",
                "password": "hunter2",
            },
            r"warehouse\.snowflake\.password",
        ),
        ({"kind": "bigquery"}, r"warehouse\.bigquery\.project: .*[Ff]ield required"),
        (
            {"kind": "oracle"},
            r"warehouse: .*'oracle'.*'duckdb', 'postgres', 'bigquery', 'snowflake'",
        ),
        (
            {"kind": "postgres", "dsn": "postgresql://u:hunter2@h/d"},
            r"warehouse\.postgres: .*dsn must not hold a password",
        ),
        (
            {"kind": "postgres", "dsn": "host=h password=hunter2"},
            r"warehouse\.postgres: .*dsn must not hold a password",
        ),
        ({"kind": "postgres", "host": "h"}, r"warehouse\.postgres: .*missing: \['database'"),
        ({"kind": "duckdb", "host": "h"}, r"warehouse\.duckdb\.host"),
    ],
)
def test_warehouse_mistakes_name_the_key(
    edit_config: ConfigEditor, warehouse: dict[str, Any], expected: str
) -> None:
    def use(document: dict[str, Any]) -> None:
        document["warehouse"] = warehouse

    message = config_error(edit_config(use))
    assert re.search(expected, message), message
    assert "hunter2" not in message
