"""The Dagster code location: built from ``mailers.yaml`` (or ``$MAILERS_CONFIG``)."""

from __future__ import annotations

import dagster as dg

from orchestration.defs.build import build_definitions

defs: dg.Definitions = build_definitions()
