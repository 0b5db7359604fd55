"""Feedback that has landed but is not loaded yet: hard bounces and complaints on the way in.

During a long send the send holds the warehouse, so provider events land as files
(:mod:`mailers.landing`) that nobody loads until it ends. :class:`LandedFeedback` reads
them meanwhile: each :meth:`~LandedFeedback.poll` lists the landing zone, parses only the
files it has not read before (and that ingestion has not loaded), and keeps the hard
bounces and complaints among their events as an Arrow table of
:data:`~mailers.events.EVENTS_SCHEMA`, which the pause rules count beside the warehouse's
own events. A poll when nothing new landed costs one directory listing.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mailers.events import EVENTS_SCHEMA, BounceClass, EventType
from mailers.ingest import ParserFor, landed_files, parse_file
from mailers.ledger import sql_text
from mailers.tables import LANDED_FILES_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


class LandedFeedback:
    """Hard bounces and complaints of landing files not loaded into the warehouse yet."""

    def __init__(self, warehouse: Warehouse, landing_dir: Path, parser_for: ParserFor) -> None:
        self.warehouse = warehouse
        self.landing_dir = landing_dir
        self.parser_for = parser_for
        self._seen: set[str] = set()
        self._tables: list[pa.Table] = [EVENTS_SCHEMA.empty_table()]

    @property
    def table(self) -> pa.Table:
        """Every hard bounce and complaint read so far (possibly some already loaded too:
        the rules count distinct messages, so an event read twice counts once)."""
        if len(self._tables) > 1:
            self._tables = [pa.concat_tables(self._tables)]
        return self._tables[0]

    def poll(self) -> int:
        """Read the landing files that are new since the last poll; return how many hard
        bounces and complaints they held."""
        new = [f for f in landed_files(self.landing_dir) if f.relative not in self._seen]
        if not new:
            return 0
        loaded = self._loaded([f.relative for f in new])
        found = 0
        for landed in new:
            self._seen.add(landed.relative)
            if landed.relative in loaded:
                continue  # its events are in the warehouse's events table
            feedback = _feedback(parse_file(landed, self.parser_for(landed.kind)))
            if feedback.num_rows:
                self._tables.append(feedback)
                found += feedback.num_rows
        return found

    def _loaded(self, names: list[str]) -> set[str]:
        """Which of ``names`` ingestion has loaded (asks about these names only, so the
        cost does not grow with the landed-files history)."""
        table = self.warehouse.relation(MAILERS_SCHEMA, LANDED_FILES_TABLE)
        listed = ", ".join(sql_text(n) for n in names)
        rows = self.warehouse.query(
            f"select source_file from {table} where source_file in ({listed})"
        )
        return set(rows["source_file"].to_pylist())


def _feedback(events: pa.Table) -> pa.Table:
    """The hard bounces and complaints of a parsed file."""
    hard = pc.and_kleene(
        pc.equal(events["event_type"], str(EventType.BOUNCED)),
        pc.equal(events["bounce_class"], str(BounceClass.HARD)),
    )
    complaint = pc.equal(events["event_type"], str(EventType.COMPLAINED))
    return events.filter(pc.fill_null(pc.or_kleene(hard, complaint), False))
