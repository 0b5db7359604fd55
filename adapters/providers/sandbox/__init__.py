"""The sandbox provider: real messages, deterministic feedback, no network.

Sending writes every accepted message as an ``.eml`` file and lands its events, chosen by
a documented rule (by recipient domain, then by a hash of the message key), for the events
asset to ingest like any provider's; ``fault:`` settings make an account fail for drills.
It has no credentials, no webhooks, no events API and no lookup.

=============  ===================================================================
module         job
=============  ===================================================================
``settings``   :class:`SandboxSettings`: engagement rates, seed, drill faults
``sending``    ``.eml`` files, the reject domain, faults, landing the events
``events``     the rule (which events a message gets), their landed form, parsing
=============  ===================================================================
"""

from __future__ import annotations

from adapters.providers.sandbox.events import (
    COMPLAINT_DOMAIN,
    EVENT_OFFSETS,
    EVENT_TYPES,
    HARD_BOUNCE_DOMAIN,
    SOFT_BOUNCE_DOMAIN,
    parse,
    planned_events,
)
from adapters.providers.sandbox.sending import REJECT_DOMAIN, SandboxProvider, build, is_rejected
from adapters.providers.sandbox.settings import KIND, MAX_BATCH_SIZE, SandboxSettings
from adapters.providers.spec import Credentials, ProviderSpec

__all__ = [
    "COMPLAINT_DOMAIN",
    "EVENT_OFFSETS",
    "EVENT_TYPES",
    "HARD_BOUNCE_DOMAIN",
    "KIND",
    "MAX_BATCH_SIZE",
    "REJECT_DOMAIN",
    "SOFT_BOUNCE_DOMAIN",
    "SPEC",
    "SandboxProvider",
    "SandboxSettings",
    "build",
    "is_rejected",
    "parse",
    "planned_events",
]

SPEC = ProviderSpec(
    kind=KIND,
    max_batch_size=MAX_BATCH_SIZE,
    settings=SandboxSettings,
    credentials=Credentials(),
    build=build,
    parse=parse,
)
