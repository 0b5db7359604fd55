"""Keeping the account's AWS credentials out of the SDK's log records and our errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

SDK_LOGGERS = frozenset({"botocore", "boto3", "urllib3", "s3transfer"})
"""Top-level names of the loggers the AWS SDK (and its HTTP stack) writes to."""


class Redactor(logging.Filter):
    """Masks credential values in records of the AWS SDK's loggers.

    botocore logs request headers (``Authorization`` with the access key id,
    ``X-Amz-Security-Token``) and the canonical request at DEBUG; this filter, attached to
    the :data:`SDK_LOGGERS`, rewrites such records before any handler sees them. It only
    ever replaces the values registered with :meth:`add`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        """Mask ``secrets`` from now on, in every SDK logger that exists by now."""
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if len(s) >= 4}
            for name in list(logging.Logger.manager.loggerDict):
                if name.split(".")[0] in SDK_LOGGERS:
                    logger = logging.getLogger(name)
                    if self not in logger.filters:
                        logger.addFilter(self)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging system's business, not ours
            return True
        if any(secret in message for secret in secrets):
            record.msg, record.args = self.redact(message), None
        return True


REDACTOR = Redactor()
"""The process-wide filter: every account's credentials are registered with it."""
