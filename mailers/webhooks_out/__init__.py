"""Canonical webhooks out: the pure core of delivering ``mailers.events`` to subscribers.

    mailers.subscribers_config   what a workspace configures (``webhook_subscribers``)
    signing                      Standard Webhooks headers (webhook-id, -timestamp, -signature)
    payload                      the JSON bodies: one event, or a batch object with a list
    schedule                     exponential retries with jitter; give up; disable a failing one
    transport                    the HTTP seam (adapters/webhooks_out.py: httpx)

No I/O here; the delivery run and its tables are not written yet.
"""
