"""Address syntax, defined once for the SQL audience step and for Python checks.

Normalization trims and lower-cases the domain (local parts are case-sensitive by RFC 5321,
so they are kept); identity for de-duplication, suppression and message keys is the whole
address lower-cased, since mailbox providers treat it so in practice. Validation is a
pragmatic dot-atom check (RFC 5322 ``dot-atom`` local part, LDH domain labels, an
alphabetic or punycode TLD, at most 254 characters), written in RE2 syntax so every
warehouse's regex engine runs the same pattern.
"""

from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ADDRESS_PATTERN = (
    rf"^{_ATEXT}+(\.{_ATEXT}+)*@({_LABEL}\.)+([A-Za-z]{{2,63}}|xn--[A-Za-z0-9-]{{1,59}})$"
)
MAX_ADDRESS_LENGTH = 254

WHITESPACE = " \t\n\r\f\v"
"""What normalization trims: ASCII whitespace, as every warehouse's ``trim`` can be told."""

_compiled = re.compile(ADDRESS_PATTERN)


def normalize(address: str) -> str:
    """Trim and lower-case the domain: ``' Ann@Example.COM '`` → ``'Ann@example.com'``."""
    trimmed = address.strip(WHITESPACE)
    local, at, domain = trimmed.rpartition("@")
    return f"{local}@{domain.lower()}" if at else trimmed


def is_valid(address: str) -> bool:
    """Whether a normalized address passes the syntax check."""
    return len(address) <= MAX_ADDRESS_LENGTH and _compiled.fullmatch(address) is not None
