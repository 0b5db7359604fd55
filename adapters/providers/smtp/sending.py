"""Sending over SMTP: one mail transaction per message, on an account's pooled sessions.

Every message is its own mail transaction (``MAIL FROM`` / ``RCPT TO`` / ``DATA``, RFC 5321
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
                                       account leaves the run. A reply whose text says
                                       it is a rate limit (``Throttling``, ``rate
                                       limit``, ``too many messages``) is
                                       ``Throttled``: the account's pacer waits it out
530 to ``MAIL``; AUTH refused (5xx);   ``AuthFailed``: the account leaves the run
untrusted TLS certificate
timeout or lost connection after the   ``Ambiguous``: in doubt (RFC 1047), the server may
final ``.``, before the answer         have taken it; recorded ``unknown``, never re-sent
=====================================  ==================================================

Each message is one call of the shared flow
(:class:`~adapters.providers.per_message.OneMessagePerCall`), up to ``pool_size`` of them in
flight at once, each journaled before and after. The wait hint is a "try again in N
seconds" in the reply text, which is not standard SMTP but which some relays send. A
message in doubt is in doubt alone; after ``ambiguous_limit`` of them in a row (a stalled
server) the account leaves the run. When it leaves (credentials refused, retries
exhausted, a wait hint longer than the policy allows), what the server accepted stays
accepted and only the messages not yet handed over are ``not_sent`` with
``account_unavailable``, for another account to send.
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import time
from collections.abc import Callable

from adapters.mime import mime_bytes
from adapters.providers.hooks import Ambiguous, AuthFailed, Retryable, RetryPolicy, Throttled
from adapters.providers.per_message import OneMessagePerCall
from adapters.providers.smtp.pool import Connection, Lane, Pool
from adapters.providers.smtp.replies import (
    AUTH_REQUIRED,
    DEFERRED,
    RCPT_ACCEPTED,
    SERVICE_CLOSING,
    InDoubt,
    Mask,
    NotHandedOver,
    rate_limited,
    retry_hint,
)
from adapters.providers.smtp.session import SessionOpener
from adapters.providers.smtp.settings import KIND, MAX_BATCH_SIZE, PASSWORD, USERNAME, SmtpSettings
from mailers.config import ProviderAccountConfig, Settings
from mailers.errors import ConfigError
from mailers.messages import OutboundMessage, SendOutcome, SendResult

logger = logging.getLogger(__name__)


class SMTPProvider(OneMessagePerCall):
    """An SMTP account: a pool of persistent sessions to one relay or submission server."""

    kind = KIND

    def __init__(
        self,
        account: str,
        settings: SmtpSettings,
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
            concurrency=settings.pool_size,
            retry=retry,
            sleep=sleep,
        )
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.settings = settings
        login = (username, password) if username is not None and password else None
        self._mask = Mask((username, password))
        self._where = settings.server
        opener = SessionOpener(account, settings, login, self._mask)
        self._pool = Pool(opener, settings.pool_size, account)

    def __repr__(self) -> str:
        return f"SMTPProvider(account={self.account!r}, server={self._where!r})"

    def close(self) -> None:
        """Stop the worker threads and QUIT the pooled sessions. Safe to call twice."""
        super().close()
        self._pool.close()

    def message_id(self, message: OutboundMessage) -> str:
        """Our ``Message-ID`` (RFC 5322 §3.6.4) for a message, without angle brackets.

        Unique per message and stable for this account, so the same message handed over
        twice (a retry after a failure) carries the same id and receivers can tell.
        """
        digest = hashlib.sha256(f"{self.account}|{message.message_key}".encode()).hexdigest()
        return f"{digest[:32]}@{message.sending_domain}"

    def _send_one(self, message: OutboundMessage) -> SendResult:
        """One mail transaction on a pooled session; failures raise the flow's hook errors."""
        message_id = self.message_id(message)
        payload = data_payload(mime_bytes(message, message_id=message_id))
        lane = Lane(self._pool)
        try:
            with lane as conn:
                try:
                    return self._transact(conn, message, payload, message_id)
                except NotHandedOver as err:
                    if not (err.connection_lost and lane.reused):
                        raise
                    # A reused session the server had closed (idle timeout, per-connection
                    # limit): nothing was handed over, so it goes again on a new one, once.
                    logger.debug(
                        "smtp account %r: reused session went stale (%s)", self.account, err
                    )
                    return self._transact(lane.replace(), message, payload, message_id)
        except NotHandedOver as err:
            failure = Throttled if err.throttled else Retryable
            raise failure(err.reason, retry_after=err.retry_after) from err
        except InDoubt as err:
            raise Ambiguous(str(err)) from err

    def _transact(
        self, conn: Connection, message: OutboundMessage, payload: bytes, message_id: str
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
            raise NotHandedOver(
                f"connection to {self._where} lost at {stage}: {self._mask.text(str(err))}",
                connection_lost=True,
            ) from err
        if stage != "end of data":
            return self._refused(conn, message, stage, code, reply)
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as err:
            conn.broken = True
            raise InDoubt(
                f"no answer from {self._where} after the message was sent "
                f"({self._mask.text(str(err))}); it may have been accepted (RFC 1047); "
                "not re-sent"
            ) from err
        conn.last_used = time.monotonic()
        if 200 <= code < 300:
            logger.debug(
                "smtp account %r: %s accepted: %s",
                self.account,
                message.message_key,
                self._mask.reply(reply),
            )
            return SendResult(message.message_key, True, provider_message_id=message_id)
        return self._refused(conn, message, stage, code, reply)

    def _refused(
        self, conn: Connection, message: OutboundMessage, stage: str, code: int, reply: bytes
    ) -> SendResult:
        """Map a non-success reply at ``stage`` to a result or a failure."""
        text = f"{code} {self._mask.reply(reply)} (at {stage})"
        if stage != "end of data" and code != SERVICE_CLOSING:
            conn.reset()  # abort the transaction, keep the session
        if code == SERVICE_CLOSING:
            conn.broken = True
            raise NotHandedOver(
                text,
                retry_after=retry_hint(text),
                connection_lost=True,
                throttled=rate_limited(text),
            )
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
            raise NotHandedOver(text, retry_after=retry_hint(text), throttled=rate_limited(text))
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
            raise InDoubt(f"unexpected answer {text} after the message was sent")
        raise NotHandedOver(f"unexpected answer {text}", connection_lost=True)


def data_payload(message: bytes) -> bytes:
    """The DATA content: dot-stuffed (RFC 5321 §4.5.2), ending with ``CRLF.CRLF``."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def build(
    account: str, config: ProviderAccountConfig, settings: SmtpSettings, app: Settings
) -> SMTPProvider:
    """An SMTP account; credentials ``username`` and ``password`` (both, or neither)."""
    given = {USERNAME, PASSWORD} & set(config.credentials)
    if len(given) == 1:
        raise ConfigError(
            f"provider account {account!r}: give both 'username' and 'password' credentials, "
            "or neither"
        )
    used_for = f"SMTP account {account!r}"
    username = config.secret(USERNAME, used_for) if given else None
    password = config.secret(PASSWORD, used_for) if given else None
    if not settings.verify_certificates:
        logger.warning(
            "smtp account %r: TLS certificates of %s are not verified", account, settings.host
        )
    return SMTPProvider(
        account,
        settings,
        username=username,
        password=password,
        max_batch_size=config.batch_size or MAX_BATCH_SIZE,
    )
