"""How ``mailers policy show`` prints an effective policy: aligned plain-text columns.

Plain text rather than a boxed table so the long key paths never wrap and a line can be
found with grep: each value's line reads ``name  value  source (inherited from …)``.
"""

from __future__ import annotations

from mailers.policy import EffectivePolicy, show

VALUE_WIDTH = 36
"""Values longer than this push their source further right rather than widen every row."""

HEADER = (
    "Limits of every level apply at once, each counting all its scope sends in a day; "
    "a narrower scope may only tighten a wider one."
)


def policy_lines(policy: EffectivePolicy) -> list[str]:
    """The policy as lines: a header, then each group's entries with their sources."""
    rows: list[tuple[str, str, str] | str] = []
    for group, entries in policy.groups().items():
        rows.append(group)
        for entry in entries:
            rows.append((f"  {entry.name}", entry.shown, entry.origin))
            for allowed in entry.wider:
                rows.append((f"    {allowed.scope} allows", show(allowed.value), allowed.source))
    cells = [row for row in rows if isinstance(row, tuple)]
    name_width = max(len(name) for name, _, _ in cells)
    value_width = min(VALUE_WIDTH, max(len(value) for _, value, _ in cells))
    lines = [
        f"Policy of {policy.scope} (today {policy.today} in {policy.timezone}, by the mailers "
        "clock)",
        HEADER,
    ]
    for row in rows:
        if isinstance(row, str):
            lines += ["", row]
            continue
        name, value, origin = row
        lines.append(f"{name:<{name_width}}  {value:<{value_width}}  {origin}".rstrip())
    return lines
