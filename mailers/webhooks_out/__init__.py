"""Canonical webhooks out: delivering ``mailers.events`` to subscribers.

    mailers.subscribers_config   what a workspace configures (``webhook_subscribers``)
    signing                      Standard Webhooks headers (webhook-id, -timestamp, -signature)
    payload                      the JSON bodies: one event, or a batch object with a list
    schedule                     exponential retries with jitter; give up; disable a failing one
    transport                    the HTTP seam (adapters/webhooks_out.py: httpx)
    tables                       the append-only tables: messages, attempts, dead letters, marks
    state                        what those tables say now (marks, due deliveries, streaks)
    delivery                     the run, replays, re-enabling (I/O: Transport, Warehouse)

Only ``delivery`` does I/O, and only through the Transport and the Warehouse.
"""
