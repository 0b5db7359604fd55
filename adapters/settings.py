"""Loading the config with every adapter check applied (provider kinds and settings).

``MAILERS_SIMULATOR_PORT`` (what ``mailers dev --simulator-port`` sets for the processes it
starts) moves every simulated account (a simulated kind whose ``base_url`` is on loopback)
to that port, so the simulator, the Dagster UI's runs and the config agree without editing
the file; real providers' accounts are never touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from adapters.providers.registry import check_account
from mailers.config import Settings
from mailers.config_loader import load_settings
from mailers.errors import ConfigError

SIMULATOR_PORT_ENV = "MAILERS_SIMULATOR_PORT"


def load(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``mailers.yaml`` (or ``$MAILERS_CONFIG``), validated by core and adapters."""
    env = os.environ if environ is None else environ
    settings = load_settings(path, account_check=check_account, environ=env)
    port = env.get(SIMULATOR_PORT_ENV)
    if not port:
        return settings
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{SIMULATOR_PORT_ENV}={port!r} is not a TCP port (1-65535)")
    from adapters.simulator.local import on_simulator_port

    return on_simulator_port(settings, int(port))
