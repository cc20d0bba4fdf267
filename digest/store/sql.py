"""SQL helpers shared by the store's modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

__all__ = [
    "insert_all_ignoring_duplicates",
    "insert_ignoring_duplicates",
    "transaction",
    "upsert_where",
    "utc_now",
]


def insert_ignoring_duplicates(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL; returns rows added."""
    if conn.dialect.name == "postgresql":
        statement: Any = postgresql_insert(table).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).on_conflict_do_nothing()
    key = next(iter(table.primary_key.columns))
    statement = statement.returning(key)
    # One statement a row: RETURNING tells what was added on every driver (rowcount
    # does not, for INSERT … ON CONFLICT on psycopg).
    return sum(len(conn.execute(statement, row).all()) for row in rows)


def insert_all_ignoring_duplicates(
    conn: Connection, table: Table, rows: list[dict[str, Any]]
) -> None:
    """INSERT … ON CONFLICT DO NOTHING of many rows, as one statement executed for all of
    them (no count of the rows added)."""
    if not rows:
        return
    insert: Any = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(table).on_conflict_do_nothing(), rows)


def upsert_where(conn: Connection, table: Table, row: dict[str, Any], where: Any) -> bool:
    """Insert ``row``, or on a key conflict overwrite the stored row if ``where`` holds.

    One statement, so it is atomic on both databases: of two concurrent calls for one
    key, the second sees the first's row (PostgreSQL waits for its commit; SQLite
    writes one transaction at a time). Returns whether a row was written.
    """
    insert: Any = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={k: statement.excluded[k] for k in row if k not in keys},
        where=where,
    ).returning(*table.primary_key.columns)
    return conn.execute(statement).first() is not None


def utc_now() -> datetime:
    """The time now, in UTC: what every part of the store writes when no time is given."""
    return datetime.now(UTC)


@contextlib.contextmanager
def transaction(engine: Engine, connection: Connection | None = None) -> Iterator[Connection]:
    """``connection``, the caller's transaction, as it is; without it a new transaction
    on ``engine`` that commits when the block ends (and rolls back on an exception).

    A store write that takes a ``connection`` joins the caller's transaction: whatever
    else the caller writes on it (a job queued with it, see digest.cluster) is committed
    with the write or not at all.
    """
    if connection is not None:
        yield connection
        return
    with engine.begin() as conn:
        yield conn
