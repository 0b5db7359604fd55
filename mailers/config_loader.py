"""Loading ``mailers.yaml``: parse, validate, check the files it names, fingerprint it.

Errors are :class:`~mailers.errors.ConfigError` listing every problem, one per line, each
as ``FILE: key.path: what is wrong``. Nothing is sent from a config that fails here.

Environment: ``MAILERS_CONFIG`` overrides the config path (default ``./mailers.yaml``),
``MAILERS_DATA_DIR`` overrides its ``data_dir``. Both are read when :func:`load_settings`
is called, never at import.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ValidationError

from mailers.config import MailersConfig, ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.rendering import TEMPLATE_PARTS, CampaignTemplate
from mailers.windows import is_valid_cron

DEFAULT_CONFIG = "mailers.yaml"
_KEY_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[\w]+)+$")
SEGMENTS_DIR = Path("models") / "segments"

AccountCheck = Callable[[ProviderAccountConfig], list[str]]
"""Checks one provider account's kind and settings; returns problems (empty when fine)."""


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file to load: ``$MAILERS_CONFIG`` or ``./mailers.yaml``."""
    env = os.environ if environ is None else environ
    return Path(env.get("MAILERS_CONFIG") or DEFAULT_CONFIG).resolve()


def load_settings(
    path: Path | str | None = None,
    *,
    account_check: AccountCheck | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load, validate and check a config file; raise one ConfigError naming every problem."""
    env = os.environ if environ is None else environ
    file = Path(path).resolve() if path else config_path(env)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found (set MAILERS_CONFIG to another path)")
    raw = file.read_bytes()
    config = _parse(file, raw)
    problems = _file_problems(file, config) + _account_problems(config, account_check)
    if problems:
        raise ConfigError("\n".join(f"{file}: {problem}" for problem in problems))
    data_dir = Path(env.get("MAILERS_DATA_DIR") or file.parent / config.data_dir).resolve()
    return Settings(
        config=config,
        path=file,
        config_hash=_fingerprint(file, raw, config),
        data_dir=data_dir,
    )


def _parse(file: Path, raw: bytes) -> MailersConfig:
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}:{where} not valid YAML: {err}") from err
    if not isinstance(document, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of keys")
    try:
        return MailersConfig.model_validate(document)
    except ValidationError as err:
        raise ConfigError("\n".join(_format_errors(file, err))) from err


def _format_errors(file: Path, err: ValidationError) -> list[str]:
    lines = []
    for error in err.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        for piece in message.split("; "):
            # Cross-reference checks report paths relative to where they ran: join them up.
            sub_path, sep, problem = piece.partition(": ")
            if sep and _KEY_PATH.match(sub_path):
                full = sub_path if not error["loc"] else f"{location}.{sub_path}"
                lines.append(f"{file}: {full}: {problem}")
            else:
                lines.append(f"{file}: {location}: {piece}")
    return lines


def _file_problems(file: Path, config: MailersConfig) -> list[str]:
    """Templates, segment models, schedules: what the schema alone cannot check."""
    base = file.parent
    templates_dir = (base / config.templates_dir).resolve()
    segments_dir = (base / config.dbt_project_dir).resolve() / SEGMENTS_DIR
    problems: list[str] = []
    for ws_name, workspace in config.workspaces.items():
        for name, campaign in workspace.campaigns.items():
            path = f"workspaces.{ws_name}.campaigns.{name}"
            model = segments_dir / f"{campaign.segment}.sql"
            if not model.is_file():
                problems.append(
                    f"{path}.segment: dbt segment model {campaign.segment!r} does not exist "
                    f"(expected {model})"
                )
            try:
                CampaignTemplate(templates_dir, campaign.template)
            except ConfigError as err:
                problems.append(f"{path}.template: {err}")
            if campaign.schedule is not None:
                problems.extend(_schedule_problems(f"{path}.schedule", campaign.schedule))
    return problems


def _schedule_problems(path: str, schedule: object) -> list[str]:
    cron = getattr(schedule, "cron", "")
    timezone = getattr(schedule, "timezone", "UTC")
    problems = []
    if not is_valid_cron(cron):
        problems.append(f"{path}.cron: {cron!r} is not a five-field cron expression")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{path}.timezone: unknown time zone {timezone!r}")
    return problems


def _account_problems(config: MailersConfig, check: AccountCheck | None) -> list[str]:
    if check is None:
        return []
    return [
        f"workspaces.{ws_name}.provider_accounts.{name}: {problem}"
        for ws_name, workspace in config.workspaces.items()
        for name, account in workspace.provider_accounts.items()
        for problem in check(account)
    ]


def _fingerprint(file: Path, raw: bytes, config: MailersConfig) -> str:
    """sha256 over the config bytes and every template it uses: what a run was sent under."""
    digest = hashlib.sha256(raw)
    templates_dir = (file.parent / config.templates_dir).resolve()
    names = sorted({c.template for ws in config.workspaces.values() for c in ws.campaigns.values()})
    for name in names:
        for part in TEMPLATE_PARTS:
            digest.update(f"\0{name}/{part}\0".encode())
            digest.update((templates_dir / name / part).read_bytes())
    return digest.hexdigest()
