"""Dagster definitions and the ``mailers`` CLI: thin glue over ``mailers`` and ``adapters``."""
