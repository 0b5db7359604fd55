"""The webhook service as a Starlette app: verify, land durably, then answer.

``POST /webhooks/{workspace}/{account}`` answers:

    200  verified and durably landed (its replay tokens recorded after landing); or a
         verified retry of a request landed before (its answer was lost): not landed again
    400  Content-Length not a number; a body that cannot be parsed, from a verified
         sender or where the provider signs inside the body (Mailgun, SNS); a body
         that stopped arriving before its Content-Length
    401  missing or bad signature or credentials, or stale
    404  unknown workspace, account or path; a provider kind without webhooks
    408  the body did not arrive within ``serve.body_timeout_seconds``
    413  a body over ``serve.max_body_bytes``: refused from Content-Length before reading,
         or as soon as a chunked body passes the limit
    503  the payload could not be landed (disk full, directory unwritable), the
         account cannot be verified now (a credential's variable unset), or an identical
         request is landing at this moment: retry later

Nothing is stored for any answer but 200, and no body makes it answer 500. ``GET
/healthz`` says the process is up; ``GET /readyz`` answers 503 when the landing zone is
not writable. The service never touches the warehouse.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.providers.registry import provider_spec
from adapters.providers.spec import WebhookVerifier
from adapters.serve.lander import GroupCommitLander
from adapters.serve.replay import PendingTokens, SharedReplayStore
from adapters.serve.s3_store import S3Segments, open_s3_store
from adapters.serve.segments import LocalSegments
from adapters.serve.unsubscribe import unsubscribe_routes
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import MailersError, WebhookMalformed, WebhookRejected
from mailers.serve_config import ServeConfig
from mailers.webhooks import WebhookRequest

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/{workspace}/{account}"

_VERIFIES_OVER_NETWORK = frozenset({"ses"})
"""Kinds whose verifier may block on the network (SNS certificates, subscription
confirmations): verified on a worker thread. The others are a few microseconds of
hashing and run on the event loop."""

_DIGITS = re.compile(r"[0-9]{1,18}")
_BAD_INPUT = (ValueError, TypeError, KeyError, RecursionError, UnicodeError)


@dataclass
class ServeStats:
    """What one app instance did (the embedded server's ``landed``/``rejected``)."""

    landed: int = 0
    rejected: int = 0
    """Requests refused with 400 or 401 by verification or parsing."""
    duplicates: int = 0
    """Verified retries of requests landed before: answered 200, not landed again."""


@dataclass(frozen=True)
class _Account:
    kind: str
    config: ProviderAccountConfig
    verify: WebhookVerifier


def open_lander(settings: Settings, serve: ServeConfig | None = None) -> GroupCommitLander:
    """A started lander for ``settings``: its landing store and the shared replay guard."""
    serve = serve or settings.config.serve
    store: LocalSegments | S3Segments
    if serve.landing.kind == "s3":
        store = open_s3_store(settings, serve)
    else:
        store = LocalSegments(
            settings.landing_dir,
            max_bytes=serve.segment_max_bytes,
            max_lines=serve.segment_max_lines,
            max_age_seconds=serve.segment_max_age_seconds,
        )
    replay = SharedReplayStore.in_landing_zone(settings.landing_dir)
    return GroupCommitLander(store, replay, max_batch=serve.commit_max_lines).start()


def create_app(
    settings: Settings,
    *,
    serve: ServeConfig | None = None,
    lander: GroupCommitLander | None = None,
) -> Starlette:
    """The service for every account of ``settings``.

    Without ``lander`` the app opens one (:func:`open_lander`) and closes it when it shuts
    down; a lander passed in is the caller's to close.
    """
    serve = serve or settings.config.serve
    owned = lander is None
    active = lander or open_lander(settings, serve)
    handler = _Webhooks(settings, serve, active)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_request: Request) -> Response:
        try:
            await run_in_threadpool(active.check_writable)
        except Exception as err:
            return PlainTextResponse(f"not ready: the landing zone is not writable: {err}", 503)
        return PlainTextResponse("ready")

    routes: list[BaseRoute] = [
        Route(WEBHOOK_PATH, handler.endpoint, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    routes += unsubscribe_routes(settings, active.land)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(active.close)

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.lander = active
    app.state.stats = handler.stats
    return app


class _Webhooks:
    """The ``POST /webhooks/{workspace}/{account}`` endpoint."""

    def __init__(self, settings: Settings, serve: ServeConfig, lander: GroupCommitLander) -> None:
        self.serve = serve
        self.lander = lander
        self.replay: SharedReplayStore = lander.replay
        self.stats = ServeStats()
        self.accounts: dict[tuple[str, str], _Account] = {}
        self.without_webhooks: dict[tuple[str, str], str] = {}
        for ws_name, workspace in settings.config.workspaces.items():
            for name, account in workspace.provider_accounts.items():
                verify = provider_spec(account.kind).verify_webhook
                if verify is not None:
                    self.accounts[(ws_name, name)] = _Account(account.kind, account, verify)
                else:
                    self.without_webhooks[(ws_name, name)] = account.kind

    async def endpoint(self, request: Request) -> Response:
        try:
            return await self._receive(request)
        except Exception:  # a bug must not cost a 500: the provider retries a 503
            log.exception("webhook request failed unexpectedly")
            return _answer(503, "could not process the request; try again later", close=True)

    async def _receive(self, request: Request) -> Response:
        workspace = request.path_params["workspace"]
        name = request.path_params["account"]
        account = self.accounts.get((workspace, name))
        if account is None:
            kind = self.without_webhooks.get((workspace, name))
            if kind is not None:
                return _answer(404, f"provider kind {kind} has no webhooks")
            return _answer(404, "unknown account")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        webhook = WebhookRequest(
            body=body, headers=dict(request.headers.items()), url=str(request.url)
        )
        guard = PendingTokens(self.replay)
        try:
            if account.kind in _VERIFIES_OVER_NETWORK:
                await run_in_threadpool(account.verify, webhook, account.config, guard)
            else:
                account.verify(webhook, account.config, guard)
            line = json.dumps(json.loads(body), separators=(",", ":")).encode()
        except WebhookMalformed as err:
            return self._refused(guard, 400, "malformed webhook body", workspace, name, err)
        except WebhookRejected as err:
            # Verifiers check the replay token last, after the signature: a refused token
            # means a genuine request seen before. Landed already: the provider is retrying
            # a request whose answer it lost (a crash between fsync and reply), and 200 is
            # the true answer (nothing is landed again). Still landing: ask it to retry.
            if guard.refused == "landed":
                guard.release()
                self.stats.duplicates += 1
                return _answer(200, "already landed")
            if guard.refused == "landing":
                guard.release()
                return _answer(503, "the same webhook is landing now; try again")
            return self._refused(guard, 401, "webhook rejected", workspace, name, err)
        except MailersError as err:  # the account cannot be verified (a secret unset)
            guard.release()
            log.error("cannot verify webhooks for %s/%s: %s", workspace, name, err)
            return _answer(503, "this account cannot verify webhooks now")
        except _BAD_INPUT as err:
            return self._refused(guard, 400, "malformed webhook body", workspace, name, err)
        except BaseException:
            guard.release()
            raise
        try:
            await self.lander.land_with_tokens(account.kind, name, line, guard.tokens)
        except Exception as err:
            guard.release()
            log.error("could not land a webhook for %s/%s: %s", workspace, name, err)
            return _answer(503, "could not land the webhook; try again later")
        self.stats.landed += 1
        return _answer(200, "landed")

    def _refused(
        self,
        guard: PendingTokens,
        status: int,
        reason: str,
        workspace: str,
        name: str,
        err: BaseException,
    ) -> Response:
        guard.release()
        self.stats.rejected += 1
        log.warning("refused webhook for %s/%s (%d): %s", workspace, name, status, err)
        return _answer(status, reason)

    async def _body(self, request: Request) -> bytes | Response:
        limit = self.serve.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not _DIGITS.fullmatch(declared.strip()):
                return _answer(400, "Content-Length is not a number", close=True)
            if int(declared) > limit:
                return _answer(413, f"body over {limit} bytes", close=True)
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.serve.body_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return _answer(413, f"body over {limit} bytes", close=True)
                    chunks.append(chunk)
        except TimeoutError:
            return _answer(408, "the body did not arrive in time", close=True)
        except ClientDisconnect:
            return _answer(400, "the body ended before its Content-Length", close=True)
        return b"".join(chunks)


def _answer(status: int, text: str, *, close: bool = False) -> Response:
    headers: dict[str, Any] = {"Connection": "close"} if close else {}
    return PlainTextResponse(text, status, headers=headers)
