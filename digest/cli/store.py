"""``digest migrate`` and ``digest store copy``: upgrading the store, moving it elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from digest.cli.base import cli, common, example, state

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from digest.cluster.schema import QueueSchema


@cli.command(epilog=example("digest migrate --config /etc/digest/config.toml"))
@common
def migrate() -> None:
    """Upgrade the store's schema to this version of digest, and say from where to where.

    On one machine every command migrates the store when it opens it; run this one after
    installing a new version (with `digest run` and `digest serve` stopped and a backup
    made), so the upgrade happens once, at a time you chose. In a cluster
    (cluster.queue set) no other command migrates: run this once before starting the
    workers and the web app; it also creates the queue's schema. Processes migrating at
    once on PostgreSQL take turns: one migrates, the others find nothing to do.
    """
    from digest.core.errors import StoreError
    from digest.store import Store, resolve_store_url

    settings = state().settings()
    url = resolve_store_url(settings.store.url, settings.base_dir)
    queue: list[QueueSchema] = []

    def queue_schema(connection: Connection) -> None:
        from digest.cluster.schema import apply_queue_schema

        queue.append(apply_queue_schema(connection))

    if settings.cluster.enabled:
        from digest.cluster.app import require_procrastinate

        require_procrastinate()  # before anything is migrated
    store = Store.open(url, migrate=False)
    try:
        before, after = store.migrate(also=queue_schema if settings.cluster.enabled else None)
        if settings.secret_key:
            store.check_suppression_key(settings.secret_key)
    finally:
        store.close()
    if before is None:
        click.echo(f"store created at {after}")
    elif before == after:
        click.echo(f"store at {after}, nothing to do")
    else:
        click.echo(f"store migrated from {before} to {after}")
    for found in queue:
        click.echo(found.describe())
        problem = found.problem()
        if problem:
            raise StoreError(problem)


@cli.group(
    "store", epilog=example("digest store copy --to postgresql+psycopg://digest@127.0.0.1/digest")
)
def store_group() -> None:
    """Move the store to another database."""


@store_group.command(
    "copy",
    epilog=example("digest store copy --to postgresql+psycopg://digest@db.example/digest"),
)
@click.option("--to", "to_url", required=True, metavar="URL", help="The empty target database.")
@common
def copy(to_url: str) -> None:
    """Copy every table of the configured store into the empty database at URL.

    Both are migrated to this version of digest first; a target that holds any row is
    refused. The copy is one transaction: when it fails, the target stays empty. Stop
    `digest run` and `digest serve` while copying, then point store.url at URL.
    """
    from digest.ops.jobs import open_store
    from digest.ops.schedule import JOB_TABLE
    from digest.store import Store, resolve_store_url
    from digest.store.copy import copy_store

    settings = state().settings()
    target_url = resolve_store_url(to_url, settings.base_dir)
    source = open_store(settings)  # in a cluster, checked rather than migrated
    try:
        # Without the key: checking it would write its check value into the target,
        # which then holds a row; the copy carries the source's check value over.
        target = Store.open(target_url)
        try:
            counts = copy_store(
                source,
                target,
                extra_tables=(JOB_TABLE,),
                progress=lambda table, rows: click.echo(f"{table}: {rows} rows"),
            )
            where = target.safe_url
        finally:
            target.close()
    finally:
        source.close()
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables to {where}")
