"""The cluster's schema: made once by ``digest migrate``, checked by every other command.

In a cluster no process migrates the store when it opens it: ``digest migrate``
upgrades the store and creates the queue's tables (Procrastinate's) in one transaction,
under the migration lock of :mod:`digest.store.migrating`. Every other command opens
the store with :func:`open_cluster_store`, which refuses a store that is not at this
digest's newest migration, or has no queue, with a sentence naming ``digest migrate``.

Procrastinate keeps no record of its schema's version, and creating its schema again
over an existing one fails, so an existing queue is left as it is. When digest creates
it, the jobs table's comment notes the Procrastinate version that made it
("procrastinate 3.10.0"); ``digest migrate`` compares that note with the Procrastinate
installed and names the migration files shipped since, which the operator applies
(docs/operations.md, "Upgrades").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text

from digest.core.errors import StoreError

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.store import Store

__all__ = [
    "QUEUE_TABLE",
    "QueueSchema",
    "apply_queue_schema",
    "check_cluster_schema",
    "open_cluster_store",
    "queue_migrations",
]

#: The table whose presence says the queue's schema is there.
QUEUE_TABLE = "procrastinate_jobs"

#: The start of the jobs table's comment that notes the version that made the schema.
_NOTE = "procrastinate "

_ADVICE = "run `digest migrate` once (in a cluster no other command migrates)"


@dataclass(frozen=True)
class QueueSchema:
    """What :func:`apply_queue_schema` found or did."""

    created: bool
    installed: str  # the Procrastinate version installed
    made_by: str | None  # the version noted on the jobs table; None: no note
    pending: tuple[str, ...] = ()  # migration files shipped since made_by

    def describe(self) -> str:
        """One line for ``digest migrate``."""
        if self.created:
            return f"queue schema created (procrastinate {self.installed})"
        if self.made_by is None:
            return "queue schema present"
        return f"queue schema present (procrastinate {self.made_by})"

    def problem(self) -> str | None:
        """The sentence asking for Procrastinate's migrations; None when none is due."""
        if not self.pending:
            return None
        return (
            f"the queue schema was made by procrastinate {self.made_by} and procrastinate "
            f"{self.installed} ships migrations since: with every worker stopped, apply "
            f"{', '.join(self.pending)} from {_migrations_path()} in this order, then record "
            f"it with COMMENT ON TABLE {QUEUE_TABLE} IS '{_NOTE}{self.installed}' "
            '(docs/operations.md, "Upgrades")'
        )


def _queue_table(connection: Connection) -> str | None:
    """The jobs table in the connection's current schema, or None."""
    found: str | None = connection.execute(
        text(f"SELECT to_regclass(quote_ident(current_schema()) || '.{QUEUE_TABLE}')::text")
    ).scalar()
    return found


def _made_by(connection: Connection) -> str | None:
    note: str | None = connection.execute(
        text(
            "SELECT obj_description("
            f"to_regclass(quote_ident(current_schema()) || '.{QUEUE_TABLE}'), 'pg_class')"
        )
    ).scalar()
    if note and note.startswith(_NOTE):
        return note.removeprefix(_NOTE)
    return None


def _note(connection: Connection, installed: str) -> None:
    if not re.fullmatch(r"[0-9A-Za-z.+_-]+", installed):
        return  # not a version this can quote safely: no note rather than a wrong one
    connection.execute(text(f"COMMENT ON TABLE {QUEUE_TABLE} IS '{_NOTE}{installed}'"))


def _version_key(value: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of "3.10.0", "3.10.1.dev2" or a file's "03.04.00_01_…"."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", value)
    return tuple(int(part) for part in match.groups()) if match else None


def _migrations_path() -> Path:
    from procrastinate.schema import SchemaManager

    return Path(SchemaManager.get_migrations_path())


def queue_migrations(since: str, upto: str) -> tuple[str, ...]:
    """Procrastinate's migration files a schema made by ``since`` needs to be that of
    ``upto``: those of the versions after ``since``, up to ``upto``, in order."""
    low, high = _version_key(since), _version_key(upto)
    if low is None or high is None:
        return ()
    names = sorted(path.name for path in _migrations_path().glob("*.sql"))
    return tuple(
        name for name in names if (key := _version_key(name)) is not None and low < key <= high
    )


def apply_queue_schema(connection: Connection) -> QueueSchema:
    """Create Procrastinate's schema in the current schema of ``connection`` (in the
    migrating transaction, under its lock) unless its jobs table is there already.

    Procrastinate must be installed: check with ``require_procrastinate`` first.
    """
    from procrastinate.schema import SchemaManager

    installed = version("procrastinate")
    if _queue_table(connection) is None:
        # On the driver's own connection: the schema is many statements, which psycopg
        # sends as one script when no parameter comes with it.
        driver = connection.connection.driver_connection
        assert driver is not None  # a connection in a transaction is open
        driver.execute(SchemaManager.get_schema())
        _note(connection, installed)
        return QueueSchema(created=True, installed=installed, made_by=installed)
    made_by = _made_by(connection)
    older = _version_key(made_by or "") or (0,)
    if made_by is None or older >= (_version_key(installed) or (0,)):
        return QueueSchema(created=False, installed=installed, made_by=made_by)
    pending = queue_migrations(made_by, installed)
    if not pending:
        # No migration since: the schema is the installed version's too.
        _note(connection, installed)
        return QueueSchema(created=False, installed=installed, made_by=installed)
    return QueueSchema(created=False, installed=installed, made_by=made_by, pending=pending)


def check_cluster_schema(store: Store) -> None:
    """A StoreError, naming ``digest migrate``, unless ``store`` is at this digest's
    newest migration and holds the queue's schema."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import DBAPIError

    from digest.store.copy import head_revision

    try:
        with store.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            queue = _queue_table(connection)
    except DBAPIError as exc:
        raise store.unusable(exc) from None
    head = head_revision()
    where = f"the store at {store.safe_url}"
    if current is None:
        raise StoreError(f"{where} has no schema yet (this digest needs {head}): {_ADVICE}")
    if current != head and not _known(current):
        raise StoreError(
            f"{where} is at revision {current}, which this digest does not know (a newer "
            "digest migrated it): install that version of digest here"
        )
    if current != head:
        raise StoreError(
            f"{where} is at revision {current} but this digest needs {head}: {_ADVICE}"
        )
    if queue is None:
        raise StoreError(f"{where} has no queue schema: {_ADVICE}")


def _known(revision: str) -> bool:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from digest.store.migrating import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except CommandError:
        return False


def open_cluster_store(settings: Settings) -> Store:
    """The store of a cluster process: opened without migrating, refused (a StoreError
    naming ``digest migrate``) unless its schema and the queue's are this digest's."""
    from digest.store import Store, resolve_store_url

    url = resolve_store_url(settings.store.url, settings.base_dir)
    store = Store.open(url, migrate=False, secret_key=settings.secret_key)
    try:
        check_cluster_schema(store)
        if settings.secret_key:
            store.check_suppression_key(settings.secret_key)
    except BaseException:
        store.close()
        raise
    return store
