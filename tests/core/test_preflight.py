"""Before a run: the environment variables a config needs, and templates against columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.settings import load
from mailers.config import Settings
from mailers.errors import SecretMissing
from mailers.preflight import (
    check_template,
    environment_references,
    require_environment,
    run_references,
    segment_columns_from_dbt,
    unset,
)

from .support import REPO, ConfigEditor

SEGMENT_COLUMNS = ["email", "first_name", "plan", "country", "contact_id"]


@pytest.fixture
def shipped() -> Settings:
    """The shipped mailers.yaml: real provider kinds with {env: NAME} credentials."""
    return load(REPO / "mailers.yaml")


def test_every_reference_is_listed_with_where_it_is_used(shipped: Settings) -> None:
    refs = {ref.path: ref for ref in environment_references(shipped)}

    assert refs["unsubscribe.signing_key"].env == "MAILERS_UNSUBSCRIBE_KEY"
    token = refs["workspaces.acme.provider_accounts.acme_postmark.credentials.server_token"]
    assert token.env == "ACME_POSTMARK_SERVER_TOKEN" and token.needed
    assert refs[
        "workspaces.globex.provider_accounts.globex_sendgrid.credentials.webhook_public_key"
    ].needed
    assert len(refs) == 1 + 3 + 2 + 2 + 2
    assert all(ref.needed for ref in refs.values())


def test_a_run_needs_its_workspaces_accounts_and_polling_the_polled_ones(
    shipped: Settings,
) -> None:
    acme = {ref.env for ref in run_references(shipped, [shipped.campaign("acme.pro_tips")])}
    globex_polling = {
        ref.env
        for ref in run_references(
            shipped, [shipped.campaign("globex.launch_newsletter")], polling=True
        )
    }

    assert "MAILERS_UNSUBSCRIBE_KEY" in acme and "ACME_MAILGUN_API_KEY" in acme
    assert not any(env.startswith("GLOBEX_") for env in acme)
    assert "GLOBEX_SENDGRID_API_KEY" in globex_polling
    assert "ACME_MAILGUN_API_KEY" in globex_polling  # acme_mailgun has poll_events: true
    assert "ACME_POSTMARK_SERVER_TOKEN" not in globex_polling
    assert run_references(shipped, []) == []


def test_missing_variables_are_named_all_at_once_never_with_a_value(shipped: Settings) -> None:
    environ = {
        "MAILERS_UNSUBSCRIBE_KEY": "s3cret-unsubscribe",
        "ACME_POSTMARK_SERVER_TOKEN": "s3cret-token",
        "ACME_MAILGUN_API_KEY": "",
    }

    with pytest.raises(SecretMissing) as missing:
        require_environment(shipped, [shipped.campaign("acme.pro_tips")], environ=environ)

    message = str(missing.value)
    assert message.startswith("4 environment variables are not set: ")
    for env in (
        "ACME_POSTMARK_WEBHOOK_USER",
        "ACME_POSTMARK_WEBHOOK_PASSWORD",
        "ACME_MAILGUN_API_KEY",
        "ACME_MAILGUN_WEBHOOK_SIGNING_KEY",
    ):
        assert env in message
    assert "acme_mailgun.credentials.api_key" in message
    assert "s3cret" not in message and "MAILERS_UNSUBSCRIBE_KEY" not in message
    assert [r.env for r in unset(environment_references(shipped), environ)][:1] == [
        "ACME_POSTMARK_WEBHOOK_USER"
    ]


def test_the_unsubscribe_key_is_needed_only_by_bulk_streams(edit_config: ConfigEditor) -> None:
    def transactional_only(config: dict[str, Any]) -> None:
        for workspace in config["workspaces"].values():
            workspace["streams"] = {"transactional": next(iter(workspace["streams"].values()))}
            for campaign in workspace["campaigns"].values():
                campaign["stream"] = "transactional"

    settings = load(edit_config(transactional_only))

    (unsubscribe,) = [r for r in environment_references(settings) if "unsubscribe" in r.path]
    assert not unsubscribe.needed
    require_environment(settings, settings.campaigns(), environ={})


def test_a_variable_the_segment_lacks_is_an_error_naming_it(
    config_copy: Path, edit_config: ConfigEditor
) -> None:
    (config_copy.parent / "templates" / "pro_tips" / "body.txt").write_text(
        "{{ plan }} {{ coupon_code }} {{ unsubscribe_url }}"
    )
    settings = load(config_copy)

    result = check_template(settings, settings.campaign("acme.pro_tips"), SEGMENT_COLUMNS)

    (error,) = result.errors
    assert error.startswith("workspaces.acme.campaigns.pro_tips.template: template 'pro_tips'")
    assert "uses 'coupon_code', which segment seg_acme_active_pro does not have" in error
    assert "every recipient would fail to render" in error


def test_the_shipped_templates_fit_their_segments(config_copy: Path) -> None:
    settings = load(config_copy)
    for ref in settings.campaigns():
        columns = segment_columns_from_dbt(settings, ref.config.segment)
        assert columns and "email" in columns
        result = check_template(settings, ref, columns)
        assert result.errors == [] and result.notes == [], ref.qualified_name


def test_a_guarded_variable_is_a_note_and_unsubscribe_url_only_exists_on_bulk_streams(
    config_copy: Path, edit_config: ConfigEditor
) -> None:
    (config_copy.parent / "templates" / "pro_tips" / "body.txt").write_text(
        "{% if vip is defined %}{{ vip }}{% endif %} {{ unsubscribe_url }}"
    )

    def transactional(config: dict[str, Any]) -> None:
        config["workspaces"]["acme"]["campaigns"]["pro_tips"]["stream"] = "transactional"

    lifecycle = load(config_copy)
    on_lifecycle = check_template(lifecycle, lifecycle.campaign("acme.pro_tips"), SEGMENT_COLUMNS)
    settings = load(edit_config(transactional))
    on_transactional = check_template(settings, settings.campaign("acme.pro_tips"), SEGMENT_COLUMNS)

    assert on_lifecycle.errors == []
    assert ["'vip'" in note and "guarded" in note for note in on_lifecycle.notes] == [True]
    (error,) = on_transactional.errors
    assert "uses 'unsubscribe_url'" in error


def test_segment_columns_come_from_the_models_yml(config_copy: Path) -> None:
    settings = load(config_copy)

    assert segment_columns_from_dbt(settings, "seg_acme_active_pro") == SEGMENT_COLUMNS
    assert segment_columns_from_dbt(settings, "seg_nowhere") is None
