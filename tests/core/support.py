"""Paths and types shared by the core tests (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "sandbox.yaml"
DBT_PROJECT = REPO / "dbt_project"

ConfigEditor = Callable[[Callable[[dict[str, Any]], None]], Path]
"""Applies an edit to the parsed config copy, writes it back and returns its path."""
