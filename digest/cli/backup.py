"""``digest backup``: a consistent copy of the store while digest keeps running."""

from __future__ import annotations

from pathlib import Path

import click

from digest.cli.base import cli, common, example, state


@cli.command(epilog=example("digest backup /var/backups/digest/digest-$(date +%F).db"))
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@common
def backup(file: Path, force: bool) -> None:
    """Copy the SQLite store to FILE, safely while `digest run` and `digest serve` write.

    Uses SQLite's online backup API, so the commits still in digest.db-wal are in the
    copy (a plain `cp digest.db` can miss them). The copy is readable by its owner only
    and opens as a store of its own. Keep `secret_key` with it: the suppression list is
    keyed with it. A PostgreSQL store is backed up with pg_dump (the command is shown).
    """
    from digest.store import resolve_store_url
    from digest.store.backup import BackupRefused, backup_sqlite, pg_dump_command, sqlite_path

    settings = state().settings()
    url = resolve_store_url(settings.store.url, settings.base_dir)
    if url.startswith("sqlite") and sqlite_path(url) is None:
        raise BackupRefused("store.url names no SQLite file; there is nothing to back up")
    if sqlite_path(url) is None:
        raise BackupRefused(
            "digest backup copies SQLite stores only; back up this one with pg_dump: "
            + pg_dump_command(url, file)
        )
    size = backup_sqlite(url, file, force=force)
    click.echo(f"backup written to {file} ({_size(size)})")


def _size(n: int) -> str:
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"
