"""Provider packages, one per provider kind, each declaring a spec.

``adapters/providers/<kind>/`` holds one provider: small modules for its settings,
sending, event mapping, webhook verification, polling and lookups (only those it has),
and its ``SPEC`` (:class:`~adapters.providers.spec.ProviderSpec`) in ``__init__``.
:mod:`adapters.providers.registry` lists the specs. Shared pieces: the send flow
(:mod:`.base`, :mod:`.hooks`), HTTP plumbing (:mod:`.http`, :mod:`.network`) and payload
reading (:mod:`.payloads`).
"""
