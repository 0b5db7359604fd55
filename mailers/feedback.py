"""Feedback that has landed but is not loaded yet: hard bounces, complaints, unsubscribes.

During a long send the send holds the warehouse, so provider events land as files
(:mod:`mailers.landing`) that nobody loads until it ends. :class:`LandedFeedback` reads
them meanwhile: each :meth:`~LandedFeedback.poll` lists the landing zone, parses only the
files it has not read before (and that ingestion has not loaded), and keeps the hard
bounces, complaints and unsubscribes among their events as an Arrow table of
:data:`~mailers.events.EVENTS_SCHEMA`: the pause rules count the first two beside the
warehouse's own events, and :mod:`mailers.late_suppressions` blocks their addresses. A poll
when nothing new landed costs a listing of the landing zone's provider and account folders
(not of their files).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mailers.events import EVENTS_SCHEMA, BounceClass, EventType
from mailers.ingest import LandedFile, ParserFor, parse_file
from mailers.tables import LANDED_FILES_TABLE
from mailers.warehouse import MAILERS_SCHEMA, Warehouse


class LandedFeedback:
    """Hard bounces, complaints and unsubscribes of landing files not loaded yet."""

    def __init__(self, warehouse: Warehouse, landing_dir: Path, parser_for: ParserFor) -> None:
        self.warehouse = warehouse
        self.landing_dir = landing_dir
        self.parser_for = parser_for
        self._seen: set[str] = set()
        self._listed: dict[Path, tuple[int, float]] = {}
        self.listings = 0
        """Account folders listed so far (a poll lists only folders that changed)."""
        self._tables: list[pa.Table] = [EVENTS_SCHEMA.empty_table()]

    @property
    def table(self) -> pa.Table:
        """Every hard bounce, complaint and unsubscribe read so far (possibly some already
        loaded too: the rules count distinct messages, so an event read twice counts once)."""
        if len(self._tables) > 1:
            self._tables = [pa.concat_tables(self._tables)]
        return self._tables[0]

    def poll(self) -> int:
        """Read the landing files that are new since the last poll; return how many hard
        bounces, complaints and unsubscribes they held."""
        new = self._new_files()
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

    def _new_files(self) -> list[LandedFile]:
        """Landing files not seen before, listing only the account folders that changed.

        A file lands by a rename into its folder, which moves the folder's modification
        time; a folder whose time is the one seen at a listing taken more than
        :data:`MTIME_GRANULARITY` after it holds nothing new. (Within that margin a
        coarse file-system clock could hide a second file landed in the same tick.) File
        times are the system clock's, so they are compared with it, not with Mailers'.
        """
        if not self.landing_dir.is_dir():
            return []
        new = []
        for folder in sorted(p for p in self.landing_dir.glob("*/*") if p.is_dir()):
            listed_at = time.time()
            mtime = folder.stat().st_mtime_ns
            previous = self._listed.get(folder)
            if previous is not None and previous[0] == mtime and previous[1] > mtime_after(mtime):
                continue
            self._listed[folder] = (mtime, listed_at)
            self.listings += 1
            kind, account = folder.parent.name, folder.name
            for path in sorted(folder.glob("*.jsonl")):
                relative = f"{kind}/{account}/{path.name}"
                if relative not in self._seen:
                    new.append(LandedFile(path=path, relative=relative, kind=kind, account=account))
        return new

    def _loaded(self, names: list[str]) -> set[str]:
        """Which of ``names`` ingestion has loaded (a join with these names only, so the
        cost does not grow with the landed-files history)."""
        table = self.warehouse.relation(MAILERS_SCHEMA, LANDED_FILES_TABLE)
        asked = pa.table({"source_file": pa.array(names, pa.string())})
        with self.warehouse.staged(asked) as staged:
            rows = self.warehouse.query(
                f"select l.source_file from {table} as l "
                f"where l.source_file in (select source_file from {staged})"
            )
        return set(rows["source_file"].to_pylist())


MTIME_GRANULARITY = 2.0
"""Seconds: the coarsest modification-time resolution of common file systems (FAT's 2 s)."""


def mtime_after(mtime_ns: int) -> float:
    """The system time after which a folder modified at ``mtime_ns`` is known unchanged."""
    return mtime_ns / 1e9 + MTIME_GRANULARITY


def _feedback(events: pa.Table) -> pa.Table:
    """The hard bounces, complaints and unsubscribes of a parsed file."""
    hard = pc.and_kleene(
        pc.equal(events["event_type"], str(EventType.BOUNCED)),
        pc.equal(events["bounce_class"], str(BounceClass.HARD)),
    )
    others = pc.is_in(
        events["event_type"],
        value_set=pa.array([str(EventType.COMPLAINED), str(EventType.UNSUBSCRIBED)]),
    )
    return events.filter(pc.fill_null(pc.or_kleene(hard, others), False))
