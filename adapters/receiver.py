"""A webhook receiver: verify each provider webhook, land it, answer; nothing else.

``POST /webhooks/<workspace>/<account>`` looks the account up in the config, has its
provider module verify the request (signature, freshness, replay), and lands the body in
the landing zone as one line before answering ``200``. A request that fails verification
gets ``401`` and nothing from it is stored. The receiver never touches the warehouse:
ingestion picks the landed files up (the ``landed_events`` sensor or the events asset).

This is a small threaded server for loopback use (the demo, tests, a single host behind a
TLS-terminating proxy).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from adapters.providers.registry import provider_spec
from mailers.config import Settings
from mailers.errors import WebhookRejected
from mailers.landing import land
from mailers.webhooks import SeenTokens, WebhookRequest

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/{workspace}/{account}"


class WebhookReceiver:
    """Receives provider webhooks for every account of a config, on ``host:port``."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.settings = settings
        self.guard = SeenTokens()
        self.landed = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def url_for(self, workspace: str, account: str) -> str:
        """The URL to register at the provider for one account."""
        return self.base_url + WEBHOOK_PATH.format(workspace=workspace, account=account)

    def start(self) -> WebhookReceiver:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, path: str, request: WebhookRequest) -> tuple[int, str]:
        """Verify and land one request; return the HTTP status and a short reason."""
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "webhooks":
            return 404, "unknown path"
        workspace, account = parts[1], parts[2]
        config = self.settings.config.workspaces.get(workspace)
        account_config = config.provider_accounts.get(account) if config else None
        if account_config is None:
            return 404, "unknown account"
        verify = provider_spec(account_config.kind).verify_webhook
        if verify is None:
            return 404, f"provider kind {account_config.kind} has no webhooks"
        try:
            verify(request, account_config, self.guard)
            line = json.dumps(json.loads(request.body), separators=(",", ":")).encode()
        except (WebhookRejected, ValueError) as err:
            with self._lock:
                self.rejected += 1
            log.warning("rejected webhook for %s/%s: %s", workspace, account, err)
            return 401, "rejected"
        land(self.settings.landing_dir, account_config.kind, account, [line])
        with self._lock:
            self.landed += 1
        return 200, "landed"


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; with Nagle on, each keep-alive
        # response would wait ~40 ms for the client's delayed ACK.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = WebhookRequest(
                body=self.rfile.read(length),
                headers=dict(self.headers.items()),
                url=f"http://{self.headers.get('Host', '')}{self.path}",
            )
            status, reason = receiver.handle(self.path.split("?", 1)[0], request)
            body = reason.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are counted, and rejections logged, by the receiver itself."""

    return _Handler
