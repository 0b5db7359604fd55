"""The SNS message format and what makes a message trustworthy: Amazon's signature.

SNS has no shared secret. A message is signed (RSA PKCS#1 v1.5 over a canonical string of
its fields) with the key of a certificate SNS serves from its own host, so trust rests on
fetching that certificate only from ``https://sns.<region>.amazonaws.com``, over verified
TLS: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailers.errors import WebhookRejected

SIGNATURE_HASHES = {"1": "sha1", "2": "sha256"}
"""SNS ``SignatureVersion`` → hash of the RSA PKCS#1 v1.5 signature (module docstring)."""

_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)

SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
"""Fields of the SNS string to sign, per message type, in byte order (``Subject`` only when
present). Same page as :data:`SIGNATURE_HASHES`."""

SNS_HOST = re.compile(r"^sns\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.amazonaws\.com(?:\.cn)?$")
"""Hosts that serve SNS signing certificates and subscription URLs."""

MAX_FETCHED_BYTES = 64 << 10
"""The most an SNS GET may answer (a certificate, a ``ConfirmSubscriptionResponse``)."""


def timestamp(value: object) -> datetime | None:
    """An SES/SNS timestamp (ISO 8601, e.g. ``2017-08-05T00:41:02.669Z``) as naive UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" +", "+"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs: ``name\\nvalue\\n`` for each signed field present."""
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise WebhookRejected("not an SNS message type")
    text = "".join(
        f"{name}\n{message[name]}\n" for name in fields if isinstance(message.get(name), str)
    )
    return text.encode("utf-8")


def check_signature(key: rsa.RSAPublicKey, signature: bytes, data: bytes, algorithm: str) -> None:
    """Refuse ``data`` unless ``signature`` is the key's signature over it."""
    digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()  # SHA1: SignatureVersion 1
    try:
        key.verify(signature, data, padding.PKCS1v15(), digest)
    except InvalidSignature as err:
        raise WebhookRejected("SNS signature does not verify") from err


def _sns_url(url: str, field: str, shape: str, *, region: str | None) -> SplitResult:
    """``url`` split, if it is ``https://sns.<region>.amazonaws.com/...`` with nothing that
    could lead elsewhere (credentials, another port, a fragment). Refusals name ``field``
    and the ``shape`` it must have."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise WebhookRejected(f"malformed {field}") from err
    match = SNS_HOST.match(parts.hostname or "")
    if (
        parts.scheme != "https"
        or match is None
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or parts.fragment
    ):
        raise WebhookRejected(f"{field} is not an {shape} URL")
    if region is not None and match.group("region") != region:
        raise WebhookRejected(f"{field} is in another region than the message's topic")
    return parts


def check_certificate_url(url: str, *, region: str | None = None) -> None:
    """Refuse a ``SigningCertURL`` that is not ``https://sns.<region>.amazonaws.com/…pem``.

    Checked before anything is fetched, so a forged message cannot make the receiver
    fetch (or trust) a certificate from anywhere else.
    """
    shape = "https://sns.<region>.amazonaws.com/....pem"
    parts = _sns_url(url, "SigningCertURL", shape, region=region)
    if not parts.path.endswith(".pem") or parts.query:
        raise WebhookRejected(f"SigningCertURL is not an {shape} URL")


def check_subscribe_url(url: str, *, region: str | None = None) -> None:
    """Refuse a ``SubscribeURL`` that is not an SNS host's ``ConfirmSubscription`` action,
    by the same host rules as :func:`check_certificate_url` (checked before any GET)."""
    shape = "https://sns.<region>.amazonaws.com/?Action=ConfirmSubscription"
    parts = _sns_url(url, "SubscribeURL", shape, region=region)
    if "Action=ConfirmSubscription" not in parts.query.split("&"):
        raise WebhookRejected(f"SubscribeURL is not an {shape} URL")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could leave the checked host: refuse it


def https_get(url: str) -> bytes:
    """GET a checked SNS URL (no redirects, at most :data:`MAX_FETCHED_BYTES`); an error
    status raises ``urllib.error.HTTPError``."""
    opener = urllib.request.build_opener(_NoRedirects)
    with opener.open(url, timeout=10) as response:  # URL checked: https, SNS host
        data: bytes = response.read(MAX_FETCHED_BYTES + 1)
    if len(data) > MAX_FETCHED_BYTES:
        raise ValueError("answer too large")
    return data


class CertificateStore:
    """SNS signing certificates' public keys, fetched once per URL and cached.

    ``fetch(url) -> bytes`` gets the PEM; the default is :func:`https_get`. Only URLs that
    pass :func:`check_certificate_url` are ever fetched.
    """

    def __init__(self, fetch: Callable[[str], bytes] | None = None, *, max_entries: int = 64):
        self._fetch = fetch or https_get
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        """The RSA public key of the certificate at ``url`` (checked before any fetch)."""
        check_certificate_url(url)
        with self._lock:
            cached = self._keys.get(url)
        if cached is not None:
            return cached
        try:
            pem = self._fetch(url)
        except Exception as err:
            raise WebhookRejected(
                f"could not fetch the SNS signing certificate: {type(err).__name__}"
            ) from err
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as err:
            raise WebhookRejected("the SNS signing certificate is not a PEM certificate") from err
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected("the SNS signing certificate has no RSA key")
        with self._lock:
            if len(self._keys) >= self._max:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = key
        return key


DEFAULT_CERTIFICATES = CertificateStore()
"""The process-wide certificate cache used when ``verify_webhook`` is given none."""
