"""The account's sending quota from SES ``GetSendQuota``, for ``pacing.quota_from_provider``.

``MaxSendRate`` is messages per second, ``Max24HourSend`` the messages allowed in a rolling
24 hours (``-1``: unlimited) and ``SentLast24Hours`` what the account sent in them.
https://docs.aws.amazon.com/ses/latest/APIReference/API_GetSendQuota.html
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from adapters.providers.ses.client import AUTH_ERRORS, AwsError, client
from adapters.providers.ses.settings import SesSettings, resolve_credentials
from mailers.config import ProviderAccountConfig
from mailers.errors import ProviderAuthError, ProviderUnavailable
from mailers.pacing import ProviderQuota


def read_quota(account: str, config: ProviderAccountConfig, settings: SesSettings) -> ProviderQuota:
    """The account's quota; ``ProviderUnavailable`` (or ``ProviderAuthError``) if unreadable."""
    ses = client(
        "ses", settings, resolve_credentials(account, config), read_timeout=settings.timeout_seconds
    )
    try:
        answer = ses.get_send_quota()
    except ClientError as err:
        error = AwsError.of(err.response)
        if error.code in AUTH_ERRORS or error.status in (401, 403):
            raise ProviderAuthError(account, f"SES GetSendQuota refused ({error.text})") from err
        raise ProviderUnavailable(account, f"SES GetSendQuota: {error.text}") from err
    except BotoCoreError as err:
        raise ProviderUnavailable(account, f"SES GetSendQuota: {type(err).__name__}") from err
    finally:
        ses.close()
    daily = _limit(answer.get("Max24HourSend"))
    return ProviderQuota(
        max_send_rate=_limit(answer.get("MaxSendRate")),
        max_24_hour_send=None if daily is None else int(daily),
        sent_last_24_hours=int(answer.get("SentLast24Hours") or 0),
    )


def _limit(value: Any) -> float | None:
    """A published limit; a negative one (``-1``) means unlimited."""
    if value is None:
        return None
    number = float(value)
    return None if number < 0 else number
