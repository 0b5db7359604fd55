"""Audience resolution: a campaign's segment turned into a table of send decisions.

One set-based statement in the warehouse takes the segment model's rows and gives each a
disposition, in this order:

1. normalize the address (trim, lower-case the domain);
2. ``skip``: no address (``missing_address``), bad syntax (``invalid_address``), or an
   active entry of the central suppression list blocks it for this workspace and stream
   (``suppressed``; entries a later removal lifted do not, :func:`mailers.suppression.active_sql`);
3. ``duplicate``: a second row for the same message key (same address, case-insensitive);
4. ``settled``: the ledger already settled this message in this send window (sent,
   skipped, in doubt...), so it is never decided twice;
5. ``send``: everything else.

The table keeps the segment's columns verbatim (they are the template variables) beside
Mailers' own ``mailers_*`` columns. Rows without an address share one message key, so they
collapse to one ``skip`` plus duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mailers.addresses import ADDRESS_PATTERN, MAX_ADDRESS_LENGTH, WHITESPACE
from mailers.affinity import affinity_sql
from mailers.config import CampaignRef
from mailers.errors import SegmentError
from mailers.keys import KEY_SEPARATOR
from mailers.ledger import SkipReason
from mailers.suppression import SuppressionScope, active_sql
from mailers.warehouse import WORK_SCHEMA, Warehouse

SEGMENTS_SCHEMA = "segments"
"""Warehouse schema the dbt segment models build into."""

EMAIL_COLUMN = "email"


class Disposition(StrEnum):
    """What the audience step decided for one segment row."""

    SEND = "send"
    SKIP = "skip"
    DUPLICATE = "duplicate"
    SETTLED = "settled"


@dataclass(frozen=True)
class AudienceSpec:
    """Which campaign window to resolve, and from which segment."""

    workspace: str
    campaign: str
    stream: str
    send_window: str
    segment: str

    @classmethod
    def of(cls, campaign: CampaignRef, send_window: str) -> AudienceSpec:
        """The spec of one window of a configured campaign."""
        return cls(
            workspace=campaign.workspace,
            campaign=campaign.name,
            stream=str(campaign.config.stream),
            send_window=send_window,
            segment=campaign.config.segment,
        )

    @property
    def table(self) -> str:
        """The working table holding this campaign's latest resolved audience."""
        return self.table_for("audience")

    def table_for(self, purpose: str) -> str:
        """A working table name for this campaign and a purpose (``audience``, ``plan``)."""
        return f"{purpose}__{self.workspace}__{self.campaign}"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def segment_columns(warehouse: Warehouse, segment: str) -> list[str]:
    """The segment model's columns; raise naming the model if it is missing or has no email."""
    columns = warehouse.columns(SEGMENTS_SCHEMA, segment)
    if columns is None:
        raise SegmentError(
            f"segment model {segment!r} is not built in the warehouse "
            f"(no relation {SEGMENTS_SCHEMA}.{segment}); build the dbt segments first"
        )
    if EMAIL_COLUMN not in [c.lower() for c in columns]:
        raise SegmentError(
            f"segment model {segment!r} has no {EMAIL_COLUMN!r} column "
            f"(it yields: {', '.join(columns) or 'no columns'})"
        )
    reserved = [c for c in columns if c.lower().startswith("mailers_")]
    if reserved:
        raise SegmentError(
            f"segment model {segment!r} uses reserved column names: {', '.join(reserved)}"
        )
    return columns


RANKED_COLUMNS = (
    "mailers_trimmed",
    "mailers_recipient",
    "mailers_message_key",
    "mailers_skip_reason",
    "mailers_rank",
)
"""Columns the resolution adds after the segment's, in order (two are dropped at the end)."""


def resolve_sql(
    warehouse: Warehouse, spec: AudienceSpec, settled_keys: str, segment_columns: Sequence[str]
) -> str:
    """The query of the audience table's rows for ``spec``.

    ``settled_keys`` is a query of the message keys the ledger has settled for this window
    (:meth:`mailers.ledger.LedgerWriter.settled_keys_sql`); ``segment_columns`` are the
    segment model's columns, in order (:func:`segment_columns`).
    """
    d = warehouse.dialect
    segment = warehouse.relation(SEGMENTS_SCHEMA, spec.segment)
    suppressions = f"({active_sql(warehouse)})"
    ws, stream = _literal(spec.workspace), _literal(spec.stream)
    sep = _literal(KEY_SEPARATOR)
    key_input = (
        f"{_literal(spec.workspace + KEY_SEPARATOR + spec.campaign)} || {sep} || "
        f"lower(coalesce(mailers_recipient, '')) || {sep} || {_literal(spec.send_window)}"
    )
    valid = d.regexp_matches("mailers_recipient", ADDRESS_PATTERN)
    trimmed = d.trim_chars(f"cast({d.quote(EMAIL_COLUMN)} as varchar)", WHITESPACE)
    local = d.regexp_group("mailers_trimmed", "^(.*)@[^@]*$")
    domain = d.regexp_group("mailers_trimmed", "@([^@]*)$")
    ranked_columns = [*segment_columns, *RANKED_COLUMNS]
    return f"""
with suppressed as (
    select distinct s.address from {suppressions} as s
    where s.scope = {_literal(SuppressionScope.GLOBAL)}
       or (s.scope = {_literal(SuppressionScope.WORKSPACE)} and s.workspace = {ws})
       or (s.scope = {_literal(SuppressionScope.STREAM)} and s.workspace = {ws}
           and s.stream = {stream})
),
segment as (
    select *, nullif({trimmed}, '') as mailers_trimmed
    from {segment}
),
normalized as (
    select *,
        case
            when mailers_trimmed like '%@%' then {local} || '@' || lower({domain})
            else mailers_trimmed
        end as mailers_recipient
    from segment
),
keyed as (
    select *,
        {d.md5_hex(key_input)} as mailers_message_key,
        case
            when mailers_recipient is null then {_literal(SkipReason.MISSING_ADDRESS)}
            when length(mailers_recipient) > {MAX_ADDRESS_LENGTH} or not ({valid})
                then {_literal(SkipReason.INVALID_ADDRESS)}
            when lower(mailers_recipient) in (select address from suppressed)
                then {_literal(SkipReason.SUPPRESSED)}
        end as mailers_skip_reason
    from normalized
),
ranked as (
    select *,
        row_number() over (
            partition by mailers_message_key order by mailers_trimmed, mailers_recipient
        ) as mailers_rank
    from keyed
),
settled as (
    {settled_keys}
),
affinity as (
    {affinity_sql(warehouse, spec.workspace, spec.stream)}
)
select
    {d.star_except("ranked", ["mailers_rank", "mailers_trimmed"], ranked_columns)},
    {_literal(spec.send_window)} as mailers_send_window,
    affinity.provider_account as mailers_sticky_account,
    affinity.identity as mailers_sticky_identity,
    case
        when mailers_rank > 1 then {_literal(Disposition.DUPLICATE)}
        when mailers_message_key in (select message_key from settled)
            then {_literal(Disposition.SETTLED)}
        when mailers_skip_reason is not null then {_literal(Disposition.SKIP)}
        else {_literal(Disposition.SEND)}
    end as mailers_disposition
from ranked
left join affinity on affinity.recipient = lower(ranked.mailers_recipient)
"""


def resolve(
    warehouse: Warehouse, spec: AudienceSpec, settled_keys: str, *, purpose: str = "audience"
) -> str:
    """Build the working table for ``spec`` and return its qualified name.

    ``purpose`` names the table: sends read ``audience__*``; a dry run uses ``plan__*``
    so it never disturbs the audience a pending send will read.
    """
    columns = segment_columns(warehouse, spec.segment)
    return warehouse.replace_table(
        WORK_SCHEMA, spec.table_for(purpose), resolve_sql(warehouse, spec, settled_keys, columns)
    )


def disposition_counts(warehouse: Warehouse, audience: str) -> dict[str, int]:
    """Rows per disposition and per skip reason, keyed as the audit record counts them."""
    result = warehouse.query(
        f"""
        select mailers_disposition as disposition, mailers_skip_reason as reason,
               count(*) as n
        from {audience}
        group by 1, 2
        """
    ).to_pylist()
    counts: dict[str, int] = {"segment_rows": sum(row["n"] for row in result)}
    for row in result:
        if row["disposition"] == Disposition.SKIP:
            name = f"skipped_{row['reason']}"
        elif row["disposition"] == Disposition.SETTLED:
            name = "already_settled"
        elif row["disposition"] == Disposition.DUPLICATE:
            name = "duplicates"
        else:
            name = "to_send"
        counts[name] = counts.get(name, 0) + row["n"]
    return counts
