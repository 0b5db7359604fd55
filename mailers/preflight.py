"""What a run needs, checked before it starts: environment variables, and templates
against their segments' columns.

Secrets: every ``{env: NAME}`` of the config is an :class:`EnvReference`. A provider
account's credentials are all needed (sending, polling or verifying its webhooks resolves
them); the unsubscribe signing key only when a campaign sends on a stream that carries
one-click unsubscribe links; an enabled webhook subscriber's secrets by the webhook delivery
only (never by a send run). A run of some campaigns needs the credentials of every account
of their workspaces (the sends step builds them all) and, when it polls events, those of the
polled accounts. Missing variables are reported all at once, by name, never with a value.

Templates: rendered once with every column of the segment set (and the variables Mailers
adds), so a variable the segment does not have is found before any recipient fails on it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailers.config import CampaignRef, Settings, StreamKind
from mailers.config_loader import SEGMENTS_DIR
from mailers.errors import SecretMissing
from mailers.rendering import CampaignTemplate, RenderFailure

SAMPLE_VALUE = "sample"
"""The value every segment column gets when a template is rendered to check its variables."""

SAMPLE_UNSUBSCRIBE_URL = "https://unsubscribe.invalid/u/sample"

WAREHOUSE_SECRETS = ("password", "private_key", "private_key_passphrase")
"""Fields of a warehouse config that hold a secret (``{env: NAME}``): a server's password,
Snowflake's key pair. Every run needs those its config sets."""


@dataclass(frozen=True, slots=True)
class EnvReference:
    """One ``{env: NAME}`` in the config: the variable, where it is referenced, if needed."""

    env: str
    path: str
    needed: bool
    workspace: str | None = None
    account: str | None = None
    """The provider account whose credential this is (None for the unsubscribe key)."""
    subscriber: str | None = None
    """The webhook subscriber whose signing secret this is (see mailers.subscribers_config)."""

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        """Whether the variable has a non-empty value (the value itself is never kept)."""
        return bool((os.environ if environ is None else environ).get(self.env))


def is_warehouse_secret(ref: EnvReference) -> bool:
    """Whether ``ref`` is one of the warehouse's secrets (:data:`WAREHOUSE_SECRETS`)."""
    return ref.path in {f"warehouse.{name}" for name in WAREHOUSE_SECRETS}


def environment_references(settings: Settings) -> list[EnvReference]:
    """Every environment variable the config references, in config order."""
    cfg = settings.config
    refs = [
        EnvReference(
            env=cfg.unsubscribe.signing_key.env,
            path="unsubscribe.signing_key",
            needed=any(ref.config.stream.needs_unsubscribe for ref in settings.campaigns()),
        )
    ]
    for name in WAREHOUSE_SECRETS:
        secret = getattr(cfg.warehouse, name, None)
        if secret is not None:
            refs.append(EnvReference(env=secret.env, path=f"warehouse.{name}", needed=True))
    for ws_name, workspace in cfg.workspaces.items():
        for name, account in workspace.provider_accounts.items():
            for key, secret in account.credentials.items():
                refs.append(
                    EnvReference(
                        env=secret.env,
                        path=f"workspaces.{ws_name}.provider_accounts.{name}.credentials.{key}",
                        needed=True,
                        workspace=ws_name,
                        account=name,
                    )
                )
        for name, subscriber in workspace.webhook_subscribers.items():
            for index, secret in enumerate(subscriber.secrets):
                refs.append(
                    EnvReference(
                        env=secret.env,
                        path=f"workspaces.{ws_name}.webhook_subscribers.{name}.secrets.{index}",
                        needed=subscriber.enabled,
                        workspace=ws_name,
                        subscriber=name,
                    )
                )
    return refs


def run_references(
    settings: Settings, campaigns: Iterable[CampaignRef], *, polling: bool = False
) -> list[EnvReference]:
    """The references a run of ``campaigns`` (and, with ``polling``, of event polling) needs."""
    chosen = list(campaigns)
    workspaces = {ref.workspace for ref in chosen}
    polled = {
        name
        for workspace in settings.config.workspaces.values()
        for name, account in workspace.provider_accounts.items()
        if polling and account.poll_events
    }
    bulk = any(c.config.stream.needs_unsubscribe for c in chosen)
    return [
        ref
        for ref in environment_references(settings)
        if is_warehouse_secret(ref)
        or (ref.account is None and ref.subscriber is None and bulk)
        or (ref.account is not None and (ref.workspace in workspaces or ref.account in polled))
    ]


def unset(
    references: Iterable[EnvReference], environ: Mapping[str, str] | None = None
) -> list[EnvReference]:
    """The needed references whose variable is not set."""
    return [ref for ref in references if ref.needed and not ref.is_set(environ)]


def missing_message(missing: Collection[EnvReference]) -> str:
    """One line naming every unset variable and what needs it."""
    paths: dict[str, list[str]] = {}
    for ref in missing:
        paths.setdefault(ref.env, []).append(ref.path)
    listed = "; ".join(f"{env} (for {', '.join(where)})" for env, where in paths.items())
    noun = "variable is" if len(paths) == 1 else "variables are"
    return f"{len(paths)} environment {noun} not set: {listed}"


def require_environment(
    settings: Settings,
    campaigns: Iterable[CampaignRef],
    *,
    polling: bool = False,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`SecretMissing` naming every variable a run of ``campaigns`` lacks."""
    missing = unset(run_references(settings, campaigns, polling=polling), environ)
    if missing:
        raise SecretMissing(missing_message(missing) + "; export them before running")


def provided_variables(stream: StreamKind) -> frozenset[str]:
    """The variables the sender adds to every segment row (see ``CampaignSender._render``)."""
    names = {"workspace", "campaign"}
    if stream.needs_unsubscribe:
        names.add("unsubscribe_url")
    return frozenset(names)


def segment_columns_from_dbt(settings: Settings, segment: str) -> list[str] | None:
    """The columns a segment model's yml documents (None when no yml describes them)."""
    folder = settings.dbt_project_dir / SEGMENTS_DIR
    for path in sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")):
        for model in _yaml_models(path):
            if model.get("name") == segment:
                columns = [str(c["name"]) for c in model.get("columns") or [] if "name" in c]
                return columns or None
    return None


def _yaml_models(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text()) or {}
    models = document.get("models") if isinstance(document, dict) else None
    return [m for m in models or [] if isinstance(m, dict)]


@dataclass(frozen=True)
class TemplateCheck:
    """What rendering a campaign's template against its segment's columns found."""

    campaign: str
    errors: list[str]
    notes: list[str]


def check_template(
    settings: Settings, campaign: CampaignRef, columns: Collection[str]
) -> TemplateCheck:
    """Render ``campaign``'s template with every segment column set, then compare the
    variables it refers to with those a row will have.

    An undefined variable in that render fails every recipient whose row takes that path
    (all of them, unless it sits in a branch): an error. A variable referred to only in a
    branch not taken is a note (fine when guarded with ``is defined``), as is a failure of a
    filter on the sample values (real data may differ).
    """
    cfg = campaign.config
    template = CampaignTemplate(settings.templates_dir, cfg.template)
    provided = provided_variables(cfg.stream)
    available = set(columns) | provided
    values: dict[str, str] = {name: SAMPLE_VALUE for name in columns}
    values.update(workspace=campaign.workspace, campaign=campaign.name)
    if "unsubscribe_url" in provided:
        values["unsubscribe_url"] = SAMPLE_UNSUBSCRIBE_URL
    where = f"workspaces.{campaign.workspace}.campaigns.{campaign.name}.template"
    lacking = f"which segment {cfg.segment} does not have (its columns: {', '.join(columns)})"
    errors, notes = [], []
    result = template.render(values)
    if isinstance(result, RenderFailure):
        if result.variable is not None and result.variable not in available:
            errors.append(
                f"{where}: template {cfg.template!r} uses {result.variable!r}, {lacking}; "
                f"every recipient would fail to render ({result.reason})"
            )
        else:
            notes.append(f"{where}: rendering with sample values failed: {result.reason}")
    flagged = {result.variable} if isinstance(result, RenderFailure) and result.variable else set()
    for name in sorted(template.variables - available - flagged):
        notes.append(
            f"{where}: template {cfg.template!r} refers to {name!r}, {lacking}; fine only "
            "where it is guarded (`is defined`)"
        )
    return TemplateCheck(campaign=campaign.qualified_name, errors=errors, notes=notes)
