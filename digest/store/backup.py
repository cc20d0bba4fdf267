"""A consistent copy of the store while other processes write to it.

The SQLite store runs in WAL mode: the newest commits live in ``digest.db-wal`` until a
checkpoint, so copying ``digest.db`` alone loses them. SQLite's online backup API
copies the database as one reader sees it, WAL included, without stopping the writers.
A PostgreSQL store is backed up with ``pg_dump``; :func:`pg_dump_command` says how.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from digest.core.errors import DigestError
from digest.core.redact import redact_url

__all__ = [
    "BackupError",
    "BackupRefused",
    "backup_sqlite",
    "create_private_file",
    "pg_dump_command",
]


class BackupError(DigestError):
    """The store could not be copied to the file asked for."""


class BackupRefused(BackupError):
    """The backup asked for is not one to make (a file that exists, another database)."""

    exit_code = 2


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and readable by its owner only, unless it exists.

    SQLite creates a database file with the default mode (0644 under the usual umask);
    created first this way, the file and the -wal and -shm files SQLite gives the same
    mode keep personal data from other users of the machine.
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except FileNotFoundError:
        pass  # no such folder: SQLite reports it when it opens the file


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true":
        return None  # a file: URI of SQLite's own, left to SQLite
    return Path(parsed.database or "")


def backup_sqlite(url: str, target: Path, *, force: bool = False) -> int:
    """Copy the SQLite store at ``url`` to ``target``; returns the copy's size in bytes.

    The copy is written to a file beside ``target`` (readable by the owner only; a new
    folder for it is the owner's alone too) and renamed to it when complete, so a failed
    backup leaves no half-written file and, with ``force``, the previous backup in
    place. Without ``force`` an existing ``target`` is refused.
    """
    source = sqlite_path(url)
    if source is None:
        raise BackupRefused(f"{redact_url(str(url))} is not a SQLite file")
    if not source.is_file():
        raise BackupError(f"there is no store at {source} to back up")
    if target.exists() and not force:
        raise BackupRefused(f"{target} exists already; use --force to overwrite it")
    if target.is_dir():
        raise BackupRefused(f"{target} is a folder; name the backup file")
    if target.resolve() == source.resolve():
        raise BackupRefused(f"{target} is the store itself; name another file")
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)  # 0600
    except OSError as exc:
        raise BackupError(f"cannot write the backup into {folder}: {exc.strerror}") from None
    os.close(handle)
    try:
        _copy(source, Path(partial))
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target.stat().st_size


def _copy(source: Path, partial: Path) -> None:
    # mode=rw: never create a database where none is; busy_timeout: wait out a
    # writer's checkpoint instead of failing at once.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=rw", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            # One step (pages=-1): the copy is one read transaction's view of the store,
            # the commits in the WAL included.
            src.backup(dst)
            # A single self-contained file: the store switches it back to WAL on open.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up the store at {source}: {exc}") from None
    finally:
        src.close()


def pg_dump_command(url: str, target: Path) -> str:
    """The ``pg_dump`` command that backs up the PostgreSQL store at ``url`` to ``target``.

    The URL loses its SQLAlchemy driver name (libpq does not know ``+psycopg``) and
    shows its password as ``***``.
    """
    libpq = make_url(url).set(drivername="postgresql")
    shown = redact_url(libpq.render_as_string(hide_password=True))
    return f"pg_dump --format=custom --file={shlex.quote(str(target))} {shlex.quote(shown)}"
