"""``digest worker``: one of any number of processes that run the cluster's jobs."""

from __future__ import annotations

import logging

import click

from digest.cli.base import cli, common, example, run_async, state
from digest.core.errors import ConfigError


def require_cluster(command: str) -> None:
    """A ConfigError unless ``[cluster] queue`` is set: ``command`` needs the queue."""
    if not state().settings().cluster.enabled:
        raise ConfigError(
            "cluster.queue",
            f"is not set: `digest {command}` runs the jobs of a cluster; set cluster.queue = "
            '"procrastinate" with a PostgreSQL store, or use `digest run` on one machine',
        )


def refuse_in_cluster(command: str, instead: str) -> None:
    """A ConfigError when ``[cluster] queue`` is set: ``command`` is for one machine."""
    if state().settings().cluster.enabled:
        raise ConfigError(
            "cluster.queue",
            f"is {state().settings().cluster.queue!r}: `digest {command}` is for one machine; "
            f"{instead}",
        )


@cli.command(epilog=example("digest worker --queues send --concurrency 1"))
@click.option(
    "--queues",
    default="",
    metavar="NAMES",
    help="Comma-separated queues to take jobs from: send (the send slices), default (the "
    "rest). [default: all]",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Jobs this process runs at once.",
)
@common
@run_async
async def worker(queues: str, concurrency: int) -> None:
    """Run the cluster's jobs until SIGTERM: the schedule's tick, collecting, planning and
    sending issues, retries, mailbox polls and confirmation mails.

    Start any number, on any machines that reach the PostgreSQL store; run `digest
    migrate` once before (no worker migrates). On SIGTERM no new job starts; a send in
    progress stops starting messages, records those in flight and ends.
    """
    from digest.cluster.app import QUEUES, require_procrastinate
    from digest.cluster.worker import run_worker

    require_cluster("worker")
    require_procrastinate()  # before the store is opened: say what to install first
    settings = state().settings()
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in QUEUES]
    if unknown:
        raise click.BadParameter(
            f"no queue {unknown[0]!r} (known: {', '.join(QUEUES)})", param_hint="--queues"
        )
    logging.getLogger("digest").setLevel(logging.INFO)
    await run_worker(settings, queues=chosen or None, concurrency=concurrency)
    click.echo("worker stopped")
