"""SQL helpers shared by the store's modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

__all__ = ["insert_ignoring_duplicates"]


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
