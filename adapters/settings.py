"""Loading the config with every adapter check applied (provider kinds and settings)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from adapters.providers import check_account
from mailers.config import Settings
from mailers.config_loader import load_settings


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``mailers.yaml`` (or ``$MAILERS_CONFIG``), validated by core and adapters."""
    return load_settings(path, account_check=check_account, environ=environ)
