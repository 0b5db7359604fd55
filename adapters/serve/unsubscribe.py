"""The one-click unsubscribe endpoint (RFC 8058) and its landing page, as Starlette routes.

Mounted by ``mailers serve`` at the path of ``unsubscribe.base_url``:

======  ============================================  ======================================
method  request                                       answer
======  ============================================  ======================================
POST    ``?token=…``, body ``List-Unsubscribe=One-    200: landed (one-click from a mail
        Click`` (urlencoded or multipart form)        client, or our page's confirm button)
GET     ``?token=…``                                  200: a page with a confirm button;
                                                      nothing lands
any     malformed, tampered or expired token;         400: a page that says which; nothing
        unknown workspace; POST without the body      lands
POST    body over :data:`MAX_BODY` bytes              413
POST    valid, but the landing zone refused           503: try again; nothing acknowledged
======  ============================================  ======================================

A valid unsubscribe is acknowledged only once ``land`` has made its line durable
(:mod:`mailers.unsubscribe_landing` says what the line holds and how ingestion reads it).
Verification is one HMAC, and nothing here touches the warehouse.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
from datetime import datetime
from html import escape
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from adapters.serve.landing_port import Land
from mailers.config import Settings
from mailers.errors import SecretMissing, UnsubscribeTokenError
from mailers.unsubscribe import UnsubscribeClaim, verify_token
from mailers.unsubscribe_landing import UNSUBSCRIBE_KIND, Via, landing_line

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""Bytes: an RFC 8058 body is 26; a form post of our page a few more."""

_HEADERS = {
    # The token is in the URL: no referrer leaks it, no cache or index keeps the page.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}

_PROBLEMS = {
    "malformed": "This unsubscribe link is incomplete or damaged. Copy the whole link from "
    "the email, or use the unsubscribe option of your mail program.",
    "tampered": "This unsubscribe link was altered and cannot be used. Use the link exactly "
    "as it appears in the email.",
    "expired": "This unsubscribe link has expired. Use the link in a more recent email, or "
    "reply to the sender to be removed.",
}


class _Refused(Exception):
    """A request that must change nothing: answered with ``status`` and a page saying why."""

    def __init__(self, status: int, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem = problem
        self.detail = detail


def _page(status: int, title: str, body: str) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>body{{font:16px/1.5 system-ui,sans-serif;"
        "max-width:32em;margin:3em auto;padding:0 1em}button{font:inherit;padding:.5em 1.2em}"
        f"</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _refusal(refused: _Refused) -> HTMLResponse:
    text = _PROBLEMS.get(refused.problem, refused.detail)
    return _page(
        refused.status,
        "Please try again" if refused.status == 503 else "Unsubscribe link not accepted",
        f"<p>{escape(text)}</p><p>Nothing was changed ({escape(refused.problem)}: "
        f"{escape(refused.detail)}).</p>",
    )


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a urlencoded or multipart form body (RFC 8058 allows both)."""
    if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + body
        )
        fields = {}
        for part in message.iter_parts() if message.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode("utf-8", "replace").strip()
        return fields
    text = body.decode("utf-8", "replace")
    return {name: values[-1] for name, values in parse_qs(text.strip()).items()}


async def _body(request: Request) -> bytes:
    """The request body, refused with 413 past :data:`MAX_BODY` (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _Refused(413, "too large", f"a body of {declared} bytes (at most {MAX_BODY})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Refused(413, "too large", f"a body over {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def unsubscribe_routes(settings: Settings, land: Land) -> list[BaseRoute]:
    """The routes at the path of ``unsubscribe.base_url``, landing through ``land``.

    The signing key is read per request, like a webhook account's credentials: while its
    variable is unset the routes answer 503 (try again) rather than keep the service down.
    """
    config = settings.config.unsubscribe
    path = urlsplit(config.base_url).path or "/"
    workspaces = frozenset(settings.config.workspaces)

    def claim_of(request: Request) -> tuple[str, UnsubscribeClaim, datetime | None]:
        token = request.query_params.get("token", "")
        if not token:
            raise _Refused(400, "malformed", "the link has no token")
        try:
            key = config.signing_key.resolve("unsubscribe.signing_key")
        except SecretMissing as err:
            log.error("unsubscribe links cannot be verified: %s", err)
            raise _Refused(503, "unavailable", "unsubscribe links cannot be checked now") from err
        try:
            claim, expires_at = verify_token(token, key)
        except UnsubscribeTokenError as err:
            raise _Refused(400, err.problem, str(err)) from err
        if claim.workspace not in workspaces:
            # Signed by us once, but the workspace is gone: nowhere to land it safely.
            raise _Refused(400, "unknown workspace", f"workspace {claim.workspace!r}")
        return token, claim, expires_at

    async def get(request: Request) -> Response:
        # A GET never unsubscribes: mail security scanners (Safe Links, Mimecast, Proofpoint)
        # and link previewers fetch every URL in a message, so a GET that unsubscribed would
        # remove recipients who never clicked. RFC 8058 makes the action a POST for this.
        try:
            token, claim, _ = claim_of(request)
        except _Refused as refused:
            return _refusal(refused)
        action = escape(f"{path}?{urlencode({'token': token})}")
        return _page(
            200,
            "Unsubscribe",
            f"<p>Stop receiving {escape(claim.stream)} email from {escape(claim.workspace)}?"
            f'</p><form method=post action="{action}">'
            '<input type=hidden name="List-Unsubscribe" value="One-Click">'
            "<input type=hidden name=via value=page>"
            "<button type=submit>Unsubscribe</button></form>",
        )

    async def post(request: Request) -> Response:
        try:
            _, claim, expires_at = claim_of(request)
            fields = _form_fields(request.headers.get("content-type", ""), await _body(request))
            if fields.get("List-Unsubscribe") != "One-Click":
                raise _Refused(
                    400, "not one-click", "the body must be List-Unsubscribe=One-Click (RFC 8058)"
                )
        except _Refused as refused:
            return _refusal(refused)
        via: Via = "page" if fields.get("via") == "page" else "one-click"
        try:
            await land(UNSUBSCRIBE_KIND, claim.workspace, landing_line(claim, via, expires_at))
        except Exception:  # any landing failure: the sender (or the person) must try again
            log.exception("unsubscribe of message %s not landed", claim.message_key)
            return _page(
                503,
                "Please try again",
                "<p>We could not record your unsubscribe just now. Nothing was changed; "
                "please try again in a few minutes.</p>",
            )
        return _page(
            200,
            "You are unsubscribed",
            f"<p>You will no longer receive {escape(claim.stream)} email from "
            f"{escape(claim.workspace)}.</p>",
        )

    async def endpoint(request: Request) -> Response:
        return await (post(request) if request.method == "POST" else get(request))

    return [Route(path, endpoint, methods=["GET", "POST"], name="unsubscribe")]
