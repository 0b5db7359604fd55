"""Opening an authenticated SMTP session, and what a failure to open one means.

A session is connect, EHLO, STARTTLS (RFC 3207) or implicit TLS (RFC 8314), then AUTH
(RFC 4954) when the account has credentials. Refused credentials, an untrusted
certificate or a server without STARTTLS or AUTH are ``AuthFailed`` (the account leaves
the run); a refused or lost connection, a 4xx greeting and RFC 4954's 454 are
:class:`~adapters.providers.smtp.replies.NotHandedOver` (tried again).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl

from adapters.providers.hooks import AuthFailed
from adapters.providers.smtp.pool import Connection
from adapters.providers.smtp.replies import Mask, NotHandedOver, retry_hint
from adapters.providers.smtp.settings import SmtpSettings
from mailers.errors import ConfigError

logger = logging.getLogger(__name__)


class SessionOpener:
    """Opens new sessions with one account's server (the pool's opener)."""

    def __init__(
        self,
        account: str,
        settings: SmtpSettings,
        login: tuple[str, str] | None,
        mask: Mask,
    ) -> None:
        self.account = account
        self.settings = settings
        self._login = login
        self._mask = mask
        self._tls = tls_context(settings)
        self._helo = settings.helo_name

    def __call__(self) -> Connection:
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
                        f"{settings.server} does not offer STARTTLS (RFC 3207); check host and "
                        "port, or use security 'tls' for a port with implicit TLS"
                    )
                smtp.starttls(context=self._tls)
                smtp.ehlo_or_helo_if_needed()
            if self._login is not None:
                smtp.login(*self._login)
        except Exception as err:
            if smtp is not None:
                smtp.close()
            mapped = self._failure(err)
            if mapped is err:
                raise
            raise mapped from err
        logger.debug(
            "smtp account %r: opened a session with %s (%s)",
            self.account,
            settings.server,
            settings.security,
        )
        return Connection(smtp)

    def _reply(self, err: smtplib.SMTPResponseException) -> str:
        """The code and masked text of the reply an ``smtplib`` error carries."""
        return f"{err.smtp_code} {self._mask.reply(err.smtp_error)}"

    def _failure(self, err: Exception) -> Exception:
        """What a failure to open a session means for the message it was opened for."""
        where = self.settings.server
        if isinstance(err, AuthFailed):
            return err
        if isinstance(err, ssl.SSLCertVerificationError):
            return AuthFailed(
                f"the TLS certificate of {where} is not trusted ({err.verify_message}); "
                "check host, ca_file or verify_certificates"
            )
        if isinstance(err, smtplib.SMTPAuthenticationError):
            text = self._reply(err)
            if 400 <= err.smtp_code < 500:
                # RFC 4954 §6: 454 4.7.0 temporary authentication failure.
                return NotHandedOver(f"authentication at {where} failed for now: {text}")
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
            text = self._reply(err)
            if 400 <= err.smtp_code < 500:
                return NotHandedOver(
                    f"{where} is not taking sessions: {text}",
                    retry_after=retry_hint(text),
                    connection_lost=True,
                )
            return AuthFailed(f"{where} refused a session for account {self.account!r}: {text}")
        if isinstance(err, smtplib.SMTPException) and not isinstance(
            err, smtplib.SMTPServerDisconnected
        ):  # e.g. no AUTH mechanism in common
            return AuthFailed(f"{where}: {self._mask.text(str(err))}")
        if isinstance(err, OSError):  # refused, timed out, reset, TLS handshake failed
            return NotHandedOver(
                f"could not open a session with {where}: {type(err).__name__}: "
                f"{self._mask.text(str(err))}",
                connection_lost=True,
            )
        return err


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
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
