"""Shared fixtures for the core tests: an editable copy of the example config."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import DBT_PROJECT, EXAMPLE_CONFIG, REPO, ConfigEditor


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """The sandbox example and templates/ copied into tmp_path, dbt_project_dir absolute."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    text = EXAMPLE_CONFIG.read_text()
    for key, value in (("dbt_project_dir", str(DBT_PROJECT)), ("templates_dir", "templates")):
        assert f"\n{key}: ../" in text
        text = re.sub(rf"\n{key}: \S+\n", f"\n{key}: {value}\n", text)
    path = tmp_path / "mailers.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def edit_config(config_copy: Path) -> ConfigEditor:
    """Edit the parsed copy of the config and write it back; returns its path."""

    def edit(change: Callable[[dict[str, Any]], None]) -> Path:
        document = yaml.safe_load(config_copy.read_text())
        change(document)
        config_copy.write_text(yaml.safe_dump(document, sort_keys=False))
        return config_copy

    return edit
