"""Upgrading a store in place and copying one into another (SQLite to PostgreSQL).

:func:`revision` and :func:`head_revision` say where a store's schema stands against
the migrations shipped. :func:`copy_store` copies every row of one store into an empty
other one, table by table in foreign-key order and in chunks, so memory stays flat in
the size of the store; on PostgreSQL it then moves each id sequence past the copied ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, inspect, select, text

from digest.core.errors import DigestError
from digest.store import schema as t
from digest.store.store import MIGRATIONS, Store

__all__ = ["CopyRefused", "copy_store", "head_revision", "revision"]

#: Rows read and written at a time.
CHUNK = 1000


class CopyRefused(DigestError):
    """The target of a copy is not one to copy into (rows in it, another schema version)."""

    exit_code = 2


def revision(store: Store) -> str | None:
    """The migration the store's schema is at; None for a database without one."""
    from alembic.runtime.migration import MigrationContext

    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest migration shipped with this version of digest."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def copy_store(
    source: Store,
    target: Store,
    *,
    extra_tables: tuple[str, ...] = (),
    progress: Callable[[str, int], None] = lambda _table, _rows: None,
) -> dict[str, int]:
    """Copy every row of ``source`` into the empty ``target``; returns rows per table.

    Both stores must be migrated to the same revision. ``extra_tables`` are tables the
    migrations do not make (the scheduler's job table): copied when the source has them,
    created in the target from the source's definition. The target is written in one
    transaction, so a failed copy leaves it as empty as it was. ``progress`` is called
    with each table's name and row count once the table is copied.
    """
    before, after = revision(source), revision(target)
    if before != after:
        raise CopyRefused(
            f"the store is at migration {before} and the target at {after}; "
            "run digest migrate on both with the same version of digest"
        )
    tables = list(t.metadata.sorted_tables) + _extra(source.engine, extra_tables)
    counts: dict[str, int] = {}
    with source.engine.connect() as reading, target.engine.begin() as writing:
        for table in tables:
            if table.metadata is not t.metadata:
                table.create(writing, checkfirst=True)
            if writing.execute(select(select(table).exists())).scalar():
                raise CopyRefused(
                    f"the target store {target.safe_url} is not empty: table {table.name} "
                    "has rows; copy into a new, empty database"
                )
        for table in tables:
            counts[table.name] = _copy_table(reading, writing, table)
            progress(table.name, counts[table.name])
        if writing.dialect.name == "postgresql":
            for table in tables:
                _advance_sequence(writing, table)
    return counts


def _extra(engine: Engine, names: tuple[str, ...]) -> list[Table]:
    """The tables named that the database at ``engine`` has, as it defines them."""
    from sqlalchemy import MetaData

    present = set(inspect(engine).get_table_names())
    reflected = MetaData()
    tables = []
    for name in names:
        if name in present:
            table = Table(name, reflected, autoload_with=engine)
            for column in table.columns:
                # A reflected type is the source dialect's (SQLite's BLOB); its generic
                # form is what the target's dialect can create.
                column.type = column.type.as_generic()
            tables.append(table)
    return tables


def _copy_table(reading: Connection, writing: Connection, table: Table) -> int:
    query = select(table).order_by(*table.primary_key.columns)
    result = reading.execution_options(yield_per=CHUNK).execute(query)
    copied = 0
    for chunk in result.partitions():
        rows: list[dict[str, Any]] = [dict(row._mapping) for row in chunk]
        writing.execute(table.insert(), rows)
        copied += len(rows)
    return copied


def _advance_sequence(writing: Connection, table: Table) -> None:
    """Let the next id a sequence gives out follow the largest id copied."""
    for column in table.primary_key.columns:
        sequence = writing.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": column.name},
        ).scalar()
        if sequence is None:
            continue  # a key the database does not number (text, or part of a composite)
        largest = writing.execute(select(func.max(column))).scalar()
        writing.execute(
            text("SELECT setval(CAST(:sequence AS regclass), :value, :called)"),
            {"sequence": sequence, "value": largest or 1, "called": largest is not None},
        )
