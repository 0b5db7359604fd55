"""The port other routes of the service land through: ``await land(kind, account, line)``.

``Land`` returns once the payload line is durably landed in the landing zone (fsync'd in a
local segment, also when it is bound for S3) and raises when it could not be; a caller answers
2xx only after it returned. :meth:`adapters.serve.lander.GroupCommitLander.land` is one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Land = Callable[[str, str, bytes], Awaitable[None]]
"""``await land(provider kind, account, payload line)``: durable on return, raises if not."""
