"""The ``create table if not exists`` that SQL engines share, with each engine's types."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from mailers.warehouse import Warehouse


def create_or_extend_table(
    warehouse: Warehouse,
    schema: str,
    table: str,
    columns: pa.Schema,
    primary_key: Sequence[str],
    type_of: Callable[[pa.DataType], str],
) -> None:
    """Create ``schema.table`` with ``columns`` (spelled by ``type_of``) where it is absent,
    and add the columns a table from an older Mailers lacks (nullable, so old rows read as
    null). ``primary_key`` is declared; whether it is enforced is the engine's business."""
    q = warehouse.dialect.quote
    fields = ", ".join(
        f"{q(f.name)} {type_of(f.type)}" + ("" if f.nullable else " not null") for f in columns
    )
    if primary_key:
        fields += f", primary key ({', '.join(q(c) for c in primary_key)})"
    relation = warehouse.relation(schema, table)
    warehouse.execute(f"create schema if not exists {q(schema)}")
    warehouse.execute(f"create table if not exists {relation} ({fields})")
    present = set(warehouse.columns(schema, table) or [])
    for f in columns:
        if f.name not in present:
            warehouse.execute(f"alter table {relation} add column {q(f.name)} {type_of(f.type)}")
