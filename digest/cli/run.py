"""Commands that keep digest running: run (the scheduler), serve, schedules, demo."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime
from typing import Any

import click

from digest.cli.base import cli, common, echo_err, example, run_async, state


@cli.command(epilog=example("digest run --config /etc/digest/config.toml"))
@common
@run_async
async def run() -> None:
    """Run the scheduler: collect, compose and send each newsletter when it is due.

    Jobs are kept in the database, so a run missed while the scheduler was down happens
    once when it comes back (within the newsletter's misfire_grace_time). Deferred
    deliveries of every unfinished issue are sent when their retry is due. Sources are
    collected at start and every collect_every_minutes, so what a feed drops within the
    week is stored before the issue is composed.
    """
    from digest.cli.cluster import refuse_in_cluster
    from digest.ops.jobs import open_store
    from digest.ops.schedule import run_scheduler

    # In a cluster the schedule is a job the queue runs once per minute cluster-wide:
    # a scheduler process of its own would be one more thing to keep alive, and only one.
    refuse_in_cluster("run", "the schedule runs in the cluster: start `digest worker` instead")
    st = state()
    settings = st.settings()
    logging.getLogger("digest").setLevel(logging.INFO)
    store = open_store(settings)  # applies migrations before the job store attaches
    url = store.engine.url.render_as_string(hide_password=False)
    store.close()
    # SIGTERM (a service manager stopping us) and Ctrl-C end the scheduler cleanly: no
    # new run starts, a send in progress finishes and records every delivery.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Confirmation mail queued by the web app goes out from here too (a lease per row
    # keeps two senders from sending one twice).
    from digest.ops.mail_queue import run_mail_queue

    queue_store = open_store(settings)
    queue = asyncio.create_task(run_mail_queue(queue_store, settings, stop=stop))
    try:
        await run_scheduler(
            settings, store_url=url, config_path=str(st.config.resolve()), stop=stop
        )
    finally:
        stop.set()
        await queue
        queue_store.close()
    click.echo("scheduler stopped")


@cli.command(epilog=example("digest serve --port 8000 --workers 2"))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=int, help="Port to listen on (0: any free)."
)
@click.option(
    "--rate-limit",
    default=None,
    help="Requests per client address to the token links; more get 429. "
    "[default: web.rate_limit of the config]",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes answering on the one port. Each keeps its own rate limits in memory "
    "(token links, sign-ups, the editors' login throttle), so a client may get up to this "
    "many times each budget. Each also sends queued confirmation mail (a lease per row "
    "keeps two from sending one twice). On SQLite they write one at a time.",
)
@common
def serve(host: str, port: int, rate_limit: str | None, workers: int) -> None:
    """Serve the reader pages (sign-up, confirmation, preferences, one-click unsubscribe),
    the public archive of the newsletters with `archive = true` and the editors' area
    under /admin.

    It also sends the queued confirmation mail, retrying while the relay is down; in a
    cluster (cluster.queue) the workers send it, and several `digest serve` replicas may
    run behind one proxy (web.rate_limit_storage then keeps their counts in one place).

    Put it behind a TLS-terminating reverse proxy at `public_url`: the client address
    (for the rate limits and consent proofs) is read from X-Forwarded-For when the request
    comes from an address in web.trusted_proxies (default: this machine). Tokens in links
    never reach the log.
    """
    import uvicorn

    from digest.cli.serving import WORKER_ENVIRONMENT, keep_out_of_collections, worker_state
    from digest.config import rate_limit_item
    from digest.config.web import unshared_counts
    from digest.ops import jobs
    from digest.web import create_app, install_token_redaction
    from digest.web.logs import log_uvicorn_through_root

    st = state()
    settings = st.settings()
    try:
        limit = rate_limit_item(rate_limit or settings.web.rate_limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate-limit") from None
    if warning := unshared_counts(settings.web, settings.cluster.enabled):
        echo_err(f"warning: {warning}")
    store = jobs.open_store(settings)  # migrated here, before any worker opens it
    # uvicorn's lines through digest's handler: the same format and UTC times as the rest
    log_uvicorn_through_root()
    install_token_redaction()  # on uvicorn's loggers and the root handlers they reach
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # configured above (and by each worker for itself)
        "server_header": False,
        # The app believes X-Forwarded-For from web.trusted_proxies alone; uvicorn's
        # own handling would believe 127.0.0.1 whatever the settings say.
        "proxy_headers": False,
    }
    if workers > 1:
        store.close()
        # Each worker is a new process that builds the app itself (see cli/serving.py).
        os.environ[WORKER_ENVIRONMENT] = worker_state(st, rate_limit or settings.web.rate_limit)
        uvicorn.run("digest.cli.serving:worker_app", factory=True, workers=workers, **options)
        return
    app = create_app(settings, store, rate_limit=limit, send_mail=True)
    keep_out_of_collections()
    try:
        uvicorn.run(app, **options)
    finally:
        store.close()


@cli.command(epilog=example("digest schedules --config config.toml"))
@common
def schedules() -> None:
    """List each newsletter's schedule and its next run in local time."""
    from digest.config.cron import next_runs

    settings = state().settings()
    for newsletter, when in next_runs(settings, datetime.now(UTC)):
        click.echo(
            f"{newsletter.id}: '{newsletter.schedule}' ({newsletter.timezone}), "
            f"next run {when:%a %Y-%m-%d %H:%M %Z}"
        )


@cli.command(epilog=example("digest demo --config config.toml"))
@click.option(
    "--week",
    default="2025-W05",
    show_default=True,
    metavar="YYYY-Www",
    help="Week of the bundled demo articles to send.",
)
@common
@run_async
async def demo(week: str) -> None:
    """One full cycle on the bundled demo: collect, compose, send to a local capture.

    Imports the lists in subscribers/, collects the feeds in examples/, and sends the
    issue over SMTP to a capture server started in-process, which writes each message
    as an .eml file into the outbox folder.
    """
    from digest.ops.demo import run_demo

    settings = state().settings()
    await run_demo(settings, week, echo=click.echo)
