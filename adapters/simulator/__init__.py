"""A provider simulator: real provider HTTP APIs on a loopback socket, no internet.

It speaks the documented subset of each provider's send and events endpoints
(:mod:`adapters.simulator.postmark`, ``mailgun``, ``sendgrid``, ``resend``), authenticates like the
provider, enforces its batch limits, produces events for accepted messages with the
sandbox's deterministic rule, and injects faults on demand (latency, status codes with
``Retry-After``, timeouts, dropped connections) and sending quotas (429 past a rate). The
demo, the tests and the benchmarks all use it.
"""

from adapters.simulator.server import Fault, Quota, Request, Response, Simulator

__all__ = ["Fault", "Quota", "Request", "Response", "Simulator"]
