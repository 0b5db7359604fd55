"""Mailers core: configuration, policy, rendering, the send ledger and canonical events.

This package is the domain model. It imports neither Dagster nor any provider SDK: the
orchestration layer (``orchestration/``) and the I/O edges (``adapters/``) call into it.
"""

__version__ = "0.1.0"
