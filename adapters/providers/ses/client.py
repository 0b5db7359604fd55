"""boto3 clients for an SES account (``sesv2`` to send, ``sqs`` to poll), and AWS errors.

Only :mod:`.sending` and :mod:`.polling` import this module, and the package reaches them
only when it sends or polls, so receiving and parsing SES events never imports boto3.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from adapters.providers.ses.redaction import REDACTOR
from adapters.providers.ses.settings import AwsCredentials, SesSettings

AUTH_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        # The account (not the message) cannot send: permanently restricted, paused, or
        # the configured configuration set does not exist.
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",
    }
)
"""Error codes that refuse the account, not one request. Common errors:
https://docs.aws.amazon.com/ses/latest/APIReference-V2/CommonErrors.html and the
``SendEmail`` errors on its API page."""

_SESSION_LOCK = threading.Lock()
_SESSION: list[Any] = []


def _session() -> Any:
    """One boto3 session per process: its loaders cache the service models, so building
    a client per account stays cheap. Credentials are given per client, not per session."""
    with _SESSION_LOCK:
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        return _SESSION[0]


def client(
    service: str, settings: SesSettings, credentials: AwsCredentials | None, *, read_timeout: float
) -> Any:
    """A boto3 client with botocore's retries off (the send flow retries)."""
    session = _session()
    keys: dict[str, str | None] = {}
    if credentials is not None:
        REDACTOR.add(credentials.values)
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    config = Config(
        region_name=settings.region,
        connect_timeout=min(5.0, settings.timeout_seconds),
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=8,
        user_agent_extra="mailers/0.1",
    )
    with _SESSION_LOCK:  # boto3 sessions are not thread-safe while creating clients
        made = session.client(service, endpoint_url=settings.endpoint_url, config=config, **keys)
    if credentials is not None:
        REDACTOR.add(credentials.values)  # loggers botocore created while building the client
    return made


@dataclass(frozen=True)
class AwsError:
    """What an AWS error answer (a ``ClientError``'s ``response``) says."""

    code: str
    """The error code (``""`` when the answer has none)."""
    status: int
    """The HTTP status (0 when unknown)."""
    text: str
    """``code: message`` (the status when there is no code), with credentials masked."""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, response: Mapping[str, Any]) -> AwsError:
        """The error in botocore's parsed ``response``."""
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        code = str(error.get("Code") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        text = REDACTOR.redact(f"{code or status}: {error.get('Message') or ''}".strip())
        return cls(code, status, text, meta.get("HTTPHeaders") or {})

    def header(self, name: str) -> str | None:
        """A response header, looked up case-insensitively."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)
