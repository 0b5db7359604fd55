"""The send flow's plug-in for APIs that take one message per call (Mailgun, SMTP, SES)."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence

from adapters.providers.base import BatchProvider
from adapters.providers.hooks import RetryPolicy
from mailers.messages import OutboundMessage, SendResult


class OneMessagePerCall(BatchProvider):
    """A provider whose API takes one message per call (Mailgun, SMTP, SES).

    Each message is its own call in the flow above, so a failure is that message's alone;
    ``concurrency`` calls run at once.
    """

    def __init__(
        self,
        account: str,
        *,
        max_batch_size: int,
        concurrency: int = 1,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            account,
            max_batch_size=max_batch_size,
            retry=retry,
            sleep=sleep,
            request_size=1,
            concurrency=concurrency,
        )

    @abstractmethod
    def _send_one(self, message: OutboundMessage) -> SendResult:
        """Hand one message over; raise the hook exceptions of the module docstring."""

    def _send_request(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        [message] = messages  # request_size is 1
        return [self._send_one(message)]
