"""Upgrading a store's schema with Alembic, one process at a time.

On PostgreSQL the upgrading transaction first takes an advisory lock on the schema it
upgrades, so processes that open one store together migrate one after the other: the
first migrates, the others then find nothing left to do.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, text

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "lock_migrations", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"

#: The class of the advisory lock migrations take on PostgreSQL (its two-key form:
#: this, then a hash of the schema's name): "dgst".
MIGRATION_LOCK = 0x64677374


def lock_migrations(connection: Connection) -> None:
    """Wait for, then hold until the transaction ends, the lock on migrating the
    current schema of ``connection`` (PostgreSQL).

    Keyed by the schema, where the tables and Alembic's version table live: stores in
    other schemas of one database (other installations, tests) do not wait on each
    other; two schemas whose names hash alike merely migrate one after the other.
    """
    connection.execute(
        text(
            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK}, "
            "hashtext(coalesce(current_schema(), '')))"
        )
    )


def upgrade(
    connection: Connection,
    *,
    suppression_key: str | None = None,
    also: Callable[[Connection], None] | None = None,
) -> tuple[str | None, str | None]:
    """Upgrade the schema on ``connection`` (in a transaction) to the newest migration;
    the revisions before and after, both read under the lock.

    ``also`` runs on the same connection, under the same lock, after the upgrade.
    """
    # Imported here: alembic (with mako and pygments) is a third of a second of
    # start-up that a process opening the store without migrating does not need.
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    if connection.dialect.name == "postgresql":
        lock_migrations(connection)
    before = MigrationContext.configure(connection).get_current_revision()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["suppression_key"] = suppression_key
    command.upgrade(config, "head")
    after = MigrationContext.configure(connection).get_current_revision()
    if also is not None:
        also(connection)
    return before, after
