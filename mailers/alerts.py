"""Alerts of the pause rules: always a log line, and optionally a signed webhook.

The webhook gets the finding as a JSON body, POSTed with the header
``X-Mailers-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed by the configured
secret, and ``X-Mailers-Timestamp`` (Unix seconds, also inside the body, so a receiver can
refuse replays). A webhook that fails is logged and never raises: an alert must not stop
(or fail) the send that tripped it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from mailers.clock import epoch
from mailers.rules_config import AlertWebhook

log = logging.getLogger("mailers.alerts")

SIGNATURE_HEADER = "X-Mailers-Signature"
TIMESTAMP_HEADER = "X-Mailers-Timestamp"


def signature(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex digest>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Alerter:
    """Sends one workspace's alerts: a log line at ``level``, then the webhook if any.

    ``line`` writes the line (default: the ``mailers.alerts`` logger; a command line
    prints it instead)."""

    def __init__(
        self, webhook: AlertWebhook | None = None, line: Callable[[int, str], None] = log.log
    ) -> None:
        self.webhook = webhook
        self.line = line

    def __call__(self, level: int, message: str, payload: Mapping[str, Any]) -> bool:
        """Alert; return whether the webhook (when there is one) took it."""
        self.line(level, message)
        if self.webhook is None:
            return True
        return self._post({**payload, "message": message, "sent_at": epoch()})

    def _post(self, payload: Mapping[str, Any]) -> bool:
        assert self.webhook is not None
        url = self.webhook.url
        try:
            secret = self.webhook.secret.resolve(f"pause_rules.alert_webhook ({url})")
        except Exception as err:  # a missing secret must not stop the send
            log.error("alert webhook %s not called: %s", url, err)
            return False
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(secret, body),
                TIMESTAMP_HEADER: str(int(payload["sent_at"])),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.webhook.timeout_seconds) as answer:
                answer.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            # HTTPError (a 4xx/5xx answer) is a URLError; the reason never holds the secret.
            log.error("alert webhook %s failed: %s", url, err)
            return False
        return True
