"""SMTP: send through any SMTP relay or submission server, over pooled connections.

Each account keeps up to ``pool_size`` persistent, authenticated connections (STARTTLS,
implicit TLS, or clear text on loopback only) and reuses them across batches. Every
message is its own mail transaction (``MAIL FROM`` / ``RCPT TO`` / ``DATA``, RFC 5321
§3.3) carrying the MIME of :func:`adapters.mime.mime_bytes`, so our headers, including
``X-Mailers-Message-Key``, travel with it. SMTP has no custom-variable channel: that header
is the message's metadata on the wire (the message key finds everything else in the
ledger). The provider message id is the ``Message-ID`` we set.

What happens to one message, by the server's answer (RFC 5321 §4.2.1 and §4.2.3):

=====================================  ==================================================
answer                                 outcome
=====================================  ==================================================
2xx after the final ``.``              accepted (provider id = our ``Message-ID``)
5xx to ``MAIL``/``RCPT``/``DATA``      rejected with the server's code and text
4xx to ``RCPT TO`` (not 421)           about this recipient (greylisting, mailbox busy):
                                       ``not_sent`` with a reason starting ``deferred:``;
                                       the account stays in the run
421 anywhere; 4xx to ``MAIL``,         about the server (throttling, shutting down):
``DATA`` or after the final ``.``;     nothing of this message was accepted:
connection refused or lost before      ``Retryable``, sent again after the reply's wait
the final ``.`` was written            hint or a backoff; past the retry policy the
                                       account leaves the run
530 to ``MAIL``; AUTH refused (5xx);   ``AuthFailed``: the account leaves the run
untrusted TLS certificate
timeout or lost connection after the   ``Ambiguous``: in doubt (RFC 1047), the server may
final ``.``, before the answer         have taken it; recorded ``unknown``, never re-sent
=====================================  ==================================================

Every message is its own call in the shared flow (:mod:`adapters.providers.base`,
``request_size`` 1), with up to ``pool_size`` calls in flight at once, each journaled
before and after. The wait hint is a "try again in N seconds" in the reply text, which is
not standard SMTP but which some relays send. A message in doubt is in doubt alone; after
``ambiguous_limit`` of them in a row (a stalled server) the account leaves the run. When it
leaves (credentials refused, retries exhausted, a wait hint longer than the policy allows),
what the server accepted stays accepted and only the messages not yet handed over are
``not_sent`` with ``account_unavailable``, for another account to send.

SMTP has no webhooks and no events API: delivery failures after acceptance come back as
DSN mail (RFC 3464) to the envelope sender, which this adapter does not read. :func:`parse`
keeps anything landed for an SMTP account as an ``unknown`` event, and
:func:`verify_webhook` refuses every request.

References: RFC 5321 (SMTP; https://www.rfc-editor.org/rfc/rfc5321), RFC 1047 (duplicate
messages after a lost answer to the final "."; https://www.rfc-editor.org/rfc/rfc1047),
RFC 3207 (STARTTLS), RFC 8314 (implicit TLS for submission), RFC 4954 (AUTH and its 454,
530, 535 replies), RFC 6531 (SMTPUTF8), Amazon SES SMTP throttling replies
(https://docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.mime import mime_bytes
from adapters.providers.base import Ambiguous, AuthFailed, BatchProvider, Retryable, RetryPolicy
from mailers.clock import utcnow
from mailers.config import ProviderAccountConfig
from mailers.config import Settings as MailersSettings
from mailers.errors import ConfigError, WebhookRejected
from mailers.events import BounceClass, CanonicalEvent, EventType, derive_event_id
from mailers.messages import OutboundMessage, SendOutcome, SendResult
from mailers.webhooks import ReplayGuard, WebhookRequest

KIND = "smtp"
MAX_BATCH_SIZE = 100
"""Messages per ``send_batch``: SMTP has no per-call limit (each message is its own
transaction); this bounds how much one batch holds and how often results are returned."""

DEFAULT_PORTS: dict[str, int] = {
    # RFC 6409 §3.1: message submission on 587, upgraded with STARTTLS (RFC 3207).
    "starttls": 587,
    # RFC 8314 §3.3: submission over implicit TLS on 465.
    "tls": 465,
    # RFC 5321 §4.5.4.2: plain SMTP on 25 (loopback relays only, see Settings).
    "none": 25,
}
"""Port used when ``port`` is not set, by ``security``."""

EVENT_TYPES: dict[str, tuple[EventType, BounceClass | None]] = {}
"""SMTP has no event feed, so nothing maps: anything landed becomes ``unknown``."""

CREDENTIAL_KEYS = ("username", "password")
"""``credentials:`` keys of an SMTP account: both (AUTH, RFC 4954) or neither."""

SERVICE_CLOSING = 421
"""RFC 5321 §3.8 / §4.2.3: "may be a reply to any command if the service knows it must shut
down"; the server closes the channel after it."""

AUTH_REQUIRED = 530
"""RFC 4954 §6: "530 5.7.0 Authentication required" (here: in answer to ``MAIL FROM``)."""

RCPT_ACCEPTED = frozenset({250, 251})
"""RFC 5321 §3.6.1 / §4.2.2: 251 "user not local; will forward" also accepts the recipient."""

RETRY_HINT = re.compile(
    r"(?:retry|try\s+again)\s+(?:after|in)\s+(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)\b",
    re.IGNORECASE,
)
"""A wait hint in a 4xx reply's text ("try again in 30 seconds"). SMTP has no Retry-After:
this is a convention of some relays; without it the base class's backoff applies."""

NOOP_AFTER_IDLE_SECONDS = 10.0
"""A pooled connection idle this long is checked with NOOP (RFC 5321 §4.1.1.9) before use;
a connection that went stale anyway is noticed at ``MAIL FROM`` and replaced once."""

DEFERRED = "deferred: "
"""Prefix of the reason of a message not accepted for a transient cause (a later run retries
it)."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
_MAX_REASON = 500

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseModel):
    """Settings of an SMTP account (``settings:`` in the config); secrets are credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, description="SMTP relay or submission server.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="Default: 587, 465 or 25 by `security`."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="STARTTLS (RFC 3207), implicit TLS (RFC 8314), or none (loopback only).",
    )
    pool_size: int = Field(
        default=2, ge=1, le=32, description="Persistent connections, used in parallel."
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Connect and per-reply timeout (also after DATA)."
    )
    helo_name: str | None = Field(
        default=None, min_length=1, description="Name given in EHLO; default: this host's FQDN."
    )
    verify_certificates: bool = Field(
        default=True, description="Verify the server's TLS certificate and host name."
    )
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        description="PEM file of the CAs to trust instead of the system store.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                "security 'none' sends mail and credentials in clear text and is only "
                f"allowed for a loopback host, not {self.host!r}; use 'starttls' or 'tls'"
            )
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file needs security 'starttls' or 'tls'")
        if self.ca_file is not None and not self.verify_certificates:
            raise ValueError("ca_file is not used when verify_certificates is false")
        return self

    @property
    def resolved_port(self) -> int:
        """The port to connect to: ``port``, or the default of ``security``."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]


# --- what one message attempt can end in, besides a SendResult ----------------------------


class _NotHandedOver(Exception):
    """Nothing of this message was accepted, for a reason about the server (not the message)."""

    def __init__(
        self, reason: str, *, retry_after: float | None = None, connection_lost: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.connection_lost = connection_lost


class _InDoubt(Exception):
    """The whole message was written but its answer never came (RFC 1047)."""


class _Connection:
    """One SMTP session (after EHLO, STARTTLS and AUTH) and its bookkeeping."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.last_used = time.monotonic()
        self.transactions = 0
        self.broken = False

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used

    def close(self) -> None:
        """QUIT when the session is healthy (RFC 5321 §4.1.1.10), then close the socket."""
        try:
            if not self.broken and self.smtp.sock is not None:
                self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            self.smtp.close()
            self.broken = True


class _Pool:
    """Idle connections of one account, reused most-recent first."""

    def __init__(self, opener: Callable[[], _Connection], size: int) -> None:
        self._opener = opener
        self._size = size
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def acquire(self) -> tuple[_Connection, bool]:
        """A connection and whether it was reused (it may have gone stale meanwhile)."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        return (conn, True) if conn is not None else (self._opener(), False)

    def release(self, conn: _Connection) -> None:
        if conn.broken:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self._size:
                conn.last_used = time.monotonic()
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _Lane:
    """The connection one message is sent over (replaced once if it went stale)."""

    def __init__(self) -> None:
        self.conn: _Connection | None = None
        self.reused = False

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.broken = True
            self.conn.close()
        self.conn = None


class SMTPProvider(BatchProvider):
    """An SMTP account: a pool of persistent sessions to one relay or submission server."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: Settings,
        *,
        username: str | None = None,
        password: str | None = None,
        max_batch_size: int = MAX_BATCH_SIZE,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=max_batch_size,
            retry=retry,
            sleep=sleep,
            request_size=1,
            concurrency=settings.pool_size,
        )
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.settings = settings
        self._login = (username, password) if username is not None and password else None
        self._secrets = [s for s in (username, password) if s]
        self._tls = _tls_context(settings)
        self._helo = settings.helo_name
        self._where = f"{settings.host}:{settings.resolved_port}"
        self._pool = _Pool(self._open, settings.pool_size)

    def __repr__(self) -> str:
        return f"SMTPProvider(account={self.account!r}, server={self._where!r})"

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """One message per call (``request_size`` 1), so its failure is its own."""
        return [self._send_one(message) for message in messages]

    def _send_one(self, message: OutboundMessage) -> SendResult:
        """One mail transaction on a pooled session; failures raise the flow's hook errors."""
        lane = _Lane()
        try:
            return self._deliver(lane, message)
        except _NotHandedOver as err:
            raise Retryable(err.reason, retry_after=err.retry_after) from err
        except _InDoubt as err:
            raise Ambiguous(str(err)) from err
        finally:
            if lane.conn is not None:
                self._pool.release(lane.conn)

    # --- one message ----------------------------------------------------------------------

    def _deliver(self, lane: _Lane, message: OutboundMessage) -> SendResult:
        """One message over the lane's session, replacing a session that went stale."""
        message_id = self.message_id(message)
        payload = _data_payload(mime_bytes(message, message_id=message_id))
        if lane.conn is None:
            lane.conn, lane.reused = self._pool.acquire()
        idle = lane.conn.idle_seconds() > NOOP_AFTER_IDLE_SECONDS
        if lane.reused and idle and not _alive(lane.conn):
            logger.debug("smtp account %r: idle session failed NOOP", self.account)
            lane.drop()
            lane.conn, lane.reused = self._open(), False
        try:
            return self._transact(lane.conn, message, payload, message_id)
        except _NotHandedOver as err:
            if not err.connection_lost:
                raise
            lane.drop()
            if not lane.reused:
                raise
            # A reused session the server had closed (idle timeout, per-connection limit):
            # nothing was handed over, so the message goes again on a fresh session, once.
            logger.debug("smtp account %r: reused session went stale (%s)", self.account, err)
            lane.conn, lane.reused = self._open(), False
            try:
                return self._transact(lane.conn, message, payload, message_id)
            except _NotHandedOver as again:
                if again.connection_lost:
                    lane.drop()
                raise
            except _InDoubt:
                lane.drop()
                raise
        except _InDoubt:
            lane.drop()
            raise
        finally:
            if lane.conn is not None and lane.conn.broken:
                lane.drop()
            lane.reused = lane.conn is not None

    def _transact(
        self, conn: _Connection, message: OutboundMessage, payload: bytes, message_id: str
    ) -> SendResult:
        """``MAIL FROM``, ``RCPT TO``, ``DATA`` (RFC 5321 §3.3) for one message."""
        smtp = conn.smtp
        sender, recipient = message.from_address, message.recipient
        options: list[str] = []
        if not (sender.isascii() and recipient.isascii()):
            if not smtp.has_extn("smtputf8"):
                return SendResult(
                    message.message_key,
                    False,
                    reason=f"{self._where} does not offer SMTPUTF8 (RFC 6531), "
                    "needed for a non-ASCII address",
                )
            options.append("SMTPUTF8")
        stage = "MAIL FROM"
        conn.last_used = time.monotonic()
        try:
            code, reply = smtp.mail(sender, options)
            if code == 250:
                stage = "RCPT TO"
                code, reply = smtp.rcpt(recipient)
                if code in RCPT_ACCEPTED:
                    stage = "DATA"
                    code, reply = smtp.docmd("DATA")
                    if code == 354:
                        # sendall either writes everything or raises: if it raises, the
                        # final "." line was not written and the server cannot accept it.
                        stage = "end of data"
                        smtp.send(payload)
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            conn.broken = True
            raise _NotHandedOver(
                f"connection to {self._where} lost at {stage}: {self._scrub(str(err))}",
                connection_lost=True,
            ) from err
        if stage != "end of data":
            return self._refused(conn, message, stage, code, reply)
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            conn.broken = True
            raise _InDoubt(
                f"no answer from {self._where} after the message was sent "
                f"({self._scrub(str(err))}); it may have been accepted (RFC 1047); "
                "not re-sent"
            ) from err
        conn.transactions += 1
        conn.last_used = time.monotonic()
        if 200 <= code < 300:
            logger.debug(
                "smtp account %r: %s accepted: %s",
                self.account,
                message.message_key,
                self._text(reply),
            )
            return SendResult(message.message_key, True, provider_message_id=message_id)
        return self._refused(conn, message, stage, code, reply)

    def _refused(
        self, conn: _Connection, message: OutboundMessage, stage: str, code: int, reply: bytes
    ) -> SendResult:
        """Map a non-success reply at ``stage`` to a result or a failure."""
        text = f"{code} {self._text(reply)} (at {stage})"
        if stage != "end of data" and code != SERVICE_CLOSING:
            _reset(conn)  # RFC 5321 §4.1.1.5: abort the transaction, keep the session
        if code == SERVICE_CLOSING:
            conn.broken = True
            raise _NotHandedOver(text, retry_after=_retry_hint(text), connection_lost=True)
        if 400 <= code < 500:
            if stage == "RCPT TO":
                # RFC 5321 §4.2.5 / §4.3.2: a 4yz to RCPT is about this recipient
                # (greylisting, mailbox busy): the other messages go on.
                return SendResult(
                    message.message_key,
                    False,
                    reason=DEFERRED + text,
                    outcome=SendOutcome.NOT_SENT,
                )
            # 4yz to MAIL, DATA or after the final ".": the server cannot take mail now
            # (SES answers throttling with 454 after DATA).
            raise _NotHandedOver(text, retry_after=_retry_hint(text))
        if code >= 500:
            if stage == "MAIL FROM" and code == AUTH_REQUIRED:
                raise AuthFailed(
                    f"{self._where} requires authentication ({text}); set the account's "
                    "'username' and 'password' credentials"
                )
            return SendResult(message.message_key, False, reason=text)
        # Not a reply SMTP allows here (RFC 5321 §4.3.2): the session is out of step.
        conn.broken = True
        if stage == "end of data":
            raise _InDoubt(f"unexpected answer {text} after the message was sent")
        raise _NotHandedOver(f"unexpected answer {text}", connection_lost=True)

    def message_id(self, message: OutboundMessage) -> str:
        """Our ``Message-ID`` (RFC 5322 §3.6.4) for a message, without angle brackets.

        Unique per message and stable for this account, so the same message handed over
        twice (a retry after a failure) carries the same id and receivers can tell.
        """
        digest = hashlib.sha256(f"{self.account}|{message.message_key}".encode()).hexdigest()
        return f"{digest[:32]}@{message.sending_domain}"

    # --- sessions -------------------------------------------------------------------------

    def _open(self) -> _Connection:
        """A new session: connect, EHLO, STARTTLS or implicit TLS, AUTH."""
        settings = self.settings
        if self._helo is None:
            self._helo = socket.getfqdn()
        smtp: smtplib.SMTP | None = None
        try:
            if settings.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    settings.host,
                    settings.resolved_port,
                    local_hostname=self._helo,
                    timeout=settings.timeout_seconds,
                    context=self._tls,
                )
            else:
                smtp = smtplib.SMTP(
                    settings.host,
                    settings.resolved_port,
                    local_hostname=self._helo,
                    timeout=settings.timeout_seconds,
                )
            smtp.ehlo_or_helo_if_needed()
            if settings.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise AuthFailed(
                        f"{self._where} does not offer STARTTLS (RFC 3207); check host and "
                        "port, or use security 'tls' for a port with implicit TLS"
                    )
                smtp.starttls(context=self._tls)
                smtp.ehlo_or_helo_if_needed()
            if self._login is not None:
                smtp.login(*self._login)
        except Exception as err:
            if smtp is not None:
                smtp.close()
            mapped = self._session_failure(err)
            if mapped is err:
                raise
            raise mapped from err
        logger.debug(
            "smtp account %r: opened a session with %s (%s)",
            self.account,
            self._where,
            settings.security,
        )
        return _Connection(smtp)

    def _session_failure(self, err: Exception) -> Exception:
        """What a failure to open a session means for the message it was opened for."""
        where = self._where
        if isinstance(err, AuthFailed | _NotHandedOver):
            return err
        if isinstance(err, ssl.SSLCertVerificationError):
            return AuthFailed(
                f"the TLS certificate of {where} is not trusted ({err.verify_message}); "
                "check host, ca_file or verify_certificates"
            )
        if isinstance(err, smtplib.SMTPAuthenticationError):
            text = f"{err.smtp_code} {self._text(err.smtp_error)}"
            if 400 <= err.smtp_code < 500:
                # RFC 4954 §6: 454 4.7.0 temporary authentication failure.
                return _NotHandedOver(f"authentication at {where} failed for now: {text}")
            return AuthFailed(
                f"{where} refused the credentials of account {self.account!r} ({text}); "
                "check its 'username' and 'password' credentials"
            )
        if isinstance(err, smtplib.SMTPNotSupportedError):
            return AuthFailed(
                f"{where} does not offer AUTH (RFC 4954) over this session; check security "
                "and port, or remove the account's credentials"
            )
        if isinstance(err, smtplib.SMTPResponseException):
            # A greeting (SMTPConnectError), EHLO or STARTTLS refused.
            text = f"{err.smtp_code} {self._text(err.smtp_error)}"
            if 400 <= err.smtp_code < 500:
                return _NotHandedOver(
                    f"{where} is not taking sessions: {text}",
                    retry_after=_retry_hint(text),
                    connection_lost=True,
                )
            return AuthFailed(f"{where} refused a session for account {self.account!r}: {text}")
        if isinstance(err, smtplib.SMTPException) and not isinstance(
            err, smtplib.SMTPServerDisconnected
        ):  # e.g. no AUTH mechanism in common
            return AuthFailed(f"{where}: {self._scrub(str(err))}")
        if isinstance(err, OSError):  # refused, timed out, reset, TLS handshake failed
            return _NotHandedOver(
                f"could not open a session with {where}: {type(err).__name__}: "
                f"{self._scrub(str(err))}",
                connection_lost=True,
            )
        return err

    def close(self) -> None:
        """Stop the worker threads and QUIT the pooled sessions. Safe to call twice."""
        super().close()
        self._pool.close()

    # --- texts ----------------------------------------------------------------------------

    def _text(self, reply: bytes | str) -> str:
        """A server reply as one line of text, with any credential value masked."""
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        return self._scrub(" ".join(text.split()))[:_MAX_REASON]

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _data_payload(message: bytes) -> bytes:
    """The DATA content: dot-stuffed (RFC 5321 §4.5.2), ending with ``CRLF.CRLF``."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _retry_hint(text: str) -> float | None:
    match = RETRY_HINT.search(text)
    return float(match.group(1)) if match else None


def _reset(conn: _Connection) -> None:
    try:
        code, _ = conn.smtp.rset()
    except (smtplib.SMTPException, OSError):
        conn.broken = True
        return
    if code != 250:
        conn.broken = True


def _alive(conn: _Connection) -> bool:
    try:
        code, _ = conn.smtp.noop()
    except (smtplib.SMTPException, OSError):
        return False
    return code == 250


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context of an account (``None`` without TLS)."""
    if settings.security == "none":
        return None
    if not settings.verify_certificates:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"ca_file {settings.ca_file!r} cannot be loaded: {err}") from err


def build(
    account: str, config: ProviderAccountConfig, settings: Settings, app: MailersSettings
) -> SMTPProvider:
    """An SMTP account; credentials ``username`` and ``password`` (both, or neither)."""
    keys = set(config.credentials)
    unknown = keys - set(CREDENTIAL_KEYS)
    if unknown:
        raise ConfigError(
            f"provider account {account!r}: unknown credentials {sorted(unknown)} "
            f"(smtp takes {', '.join(CREDENTIAL_KEYS)})"
        )
    if keys and keys != set(CREDENTIAL_KEYS):
        raise ConfigError(
            f"provider account {account!r}: give both 'username' and 'password' credentials, "
            "or neither"
        )
    login = {
        key: config.credentials[key].resolve(f"provider account {account!r} credential {key!r}")
        for key in sorted(keys)
    }
    if not settings.verify_certificates:
        logger.warning(
            "smtp account %r: TLS certificates of %s are not verified", account, settings.host
        )
    return SMTPProvider(
        account,
        settings,
        username=login.get("username"),
        password=login.get("password"),
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
    )


def parse(payload: bytes, account: str) -> list[CanonicalEvent]:
    """SMTP has no event feed: anything landed for an SMTP account is kept as ``unknown``."""
    raw = payload.decode("utf-8", "replace").rstrip("\r\n")
    if not raw.strip():
        return []
    return [
        CanonicalEvent(
            event_id=derive_event_id(KIND, account, raw),
            event_type=EventType.UNKNOWN,
            occurred_at=utcnow(),
            provider=KIND,
            provider_account=account,
            raw_payload=raw,
            reason="smtp accounts have no event feed; bounces arrive as DSN mail (RFC 3464) "
            "to the envelope sender",
        )
    ]


def verify_webhook(
    request: WebhookRequest,
    config: ProviderAccountConfig,
    guard: ReplayGuard,
    *,
    now: float | None = None,
) -> None:
    """SMTP servers send no webhooks: every request is refused."""
    raise WebhookRejected("smtp accounts receive no webhooks")
