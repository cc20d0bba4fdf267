"""Commands that send an issue and follow its deliveries: send, status, deliveries."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from digest.cli.base import cli, common, echo_err, example, run_async, state

if TYPE_CHECKING:
    from digest.config import NewsletterSettings, Settings
    from digest.store import Store


@cli.command(epilog=example("digest send wochenueberblick --week 2025-W05 --dry-run"))
@click.argument("newsletter")
@click.option(
    "--week",
    metavar="YYYY-Www",
    help="ISO week to send (default: the previous week in the newsletter's time zone).",
)
@click.option("--dry-run", is_flag=True, help="Build every message, send and record nothing.")
@click.option(
    "--wait",
    is_flag=True,
    help="With a cluster ([cluster] queue): wait until the workers have sent the issue, "
    "showing how it goes, and exit as a send on one machine does (which always waits).",
)
@common
@run_async
async def send(newsletter: str, week: str | None, dry_run: bool, wait: bool) -> None:
    """Compose NEWSLETTER's issue of a week and send it to its segments.

    Running it again sends nothing twice; after an interruption it sends only to
    those not yet sent. An issue's readers are fixed when it first goes out: who
    subscribes later gets the next issue, who unsubscribes meanwhile gets nothing
    more. --dry-run counts both, and everything else, as the send would.

    Exit code 0 when nothing of the issue is left to send; 75 when rows are left,
    deferred for a retry (the summary says when the next one is due), being sent by
    another run, or not reached because SIGTERM or Ctrl-C stopped the run (the
    messages in flight are finished and recorded first); 1 when sending stopped on an
    error.

    With a cluster ([cluster] queue) the issue is composed here and queued; the
    workers plan and send it (`digest status` shows how it goes). With --wait the
    command waits for them and exits as above; 75 also while the relay cannot be
    reached (the workers try again) and when the wait is interrupted.
    """
    from digest.delivery.relays import open_transport
    from digest.ops import jobs

    settings = state().settings()
    chosen = settings.newsletter(newsletter)
    store = jobs.open_store(settings)
    try:
        if settings.cluster.enabled and not dry_run:
            code = await _send_in_cluster(settings, store, chosen, week, wait)
            if code:
                raise SystemExit(code)
            return
        if dry_run:
            report = jobs.dry_run(settings, store, chosen, week)
            click.echo(
                report.summary()
                if report
                else f"{newsletter}: no articles in {week or 'the previous week'}; "
                "nothing would be sent"
            )
            shown = report.failures[:20] if report else []
            for failure in shown:
                echo_err(f"would fail: {failure}")
            if report and report.would_fail > len(shown):
                echo_err(f"would fail: {report.would_fail - len(shown)} more")
            return
        transport = open_transport(settings.smtp)
        try:
            with _progress() as progress, _stop_on_signals() as stop:
                result = await jobs.send(
                    settings,
                    store,
                    chosen,
                    week,
                    transport,
                    progress=progress,
                    stop=stop,
                    processes=settings.smtp.processes,
                )
        finally:
            await transport.close()
    finally:
        store.close()
    if result is None:
        click.echo(f"{newsletter}: no new articles in {week or 'the previous week'}; nothing sent")
        return
    click.echo(result.summary())
    for failure in result.failures[:20]:
        echo_err(f"refused: {failure}")
    if result.stopped and result.stopped != "interrupted":
        echo_err(
            f"error: sending stopped: {result.stopped}. Run the same command again "
            "to send to the rest."
        )
        raise SystemExit(1)
    if not result.finished:
        raise SystemExit(EXIT_LEFT)


async def _send_in_cluster(
    settings: Settings, store: Store, newsletter: NewsletterSettings, week: str | None,
    wait: bool,
) -> int:  # fmt: skip
    """Queue the issue for the cluster's workers; with ``wait`` follow it to the end."""
    from digest.cluster.follow import follow, queue_send

    queued = queue_send(settings, store, newsletter, week)
    if queued is None:
        click.echo(f"{newsletter.id}: no new articles in {week or 'the previous week'}; "
                   "nothing sent")  # fmt: skip
        return 0
    key = queued.record.key
    click.echo(
        f"{newsletter.id} {key}: "
        + (f"queued (job {queued.job})" if queued.job is not None else "queued already")
        + "; the cluster's workers plan and send it"
        + ("" if wait else f"; `digest status {newsletter.id} --week {key}` shows how it goes")
    )
    if not wait:
        return 0
    with _stop_on_signals() as stop:
        return await follow(settings, store, queued, echo=click.echo, echo_err=echo_err,
                            stop=stop)  # fmt: skip


#: Exit code of `digest send` when the run went well but rows of the issue are left:
#: deferred for a retry, being sent by another run, or not reached before an
#: interruption (EX_TEMPFAIL in sysexits.h).
EXIT_LEFT = 75


class _stop_on_signals:
    """SIGTERM and Ctrl-C set the event: no new message starts, those in flight finish."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> asyncio.Event:
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        for signum in self.SIGNALS:
            self._loop.add_signal_handler(signum, event.set)
        return event

    def __exit__(self, *exc: object) -> None:
        for signum in self.SIGNALS:
            self._loop.remove_signal_handler(signum)


class _progress:
    """The send's progress on stderr: the count (n/N, N as far as planned), the rate
    and the time left. On a terminal a rich progress bar; elsewhere (cron, systemd) a
    log line every :attr:`EVERY` seconds."""

    #: Seconds between two log lines outside a terminal.
    EVERY = 5.0
    log = logging.getLogger("digest.cli.send")

    def __enter__(self) -> Callable[[int, int], None] | None:
        self._started = time.monotonic()
        self._bar: Any = None
        if not sys.stderr.isatty():
            if self.log.getEffectiveLevel() > logging.INFO:
                self.log.setLevel(logging.INFO)  # the CLI's default level is WARNING
            self._logged = self._started
            return self._log_line
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.percentage:>3.0f} %"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[left]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        task = self._bar.add_task("sending", total=None, rate="", left="")

        def update(done: int, total: int) -> None:
            rate, left = self._figures(done, total)
            self._bar.update(task, completed=done, total=total, rate=rate, left=left)

        return update

    def _figures(self, done: int, total: int) -> tuple[str, str]:
        """The rate so far and the time left at that rate, as text."""
        seconds = time.monotonic() - self._started
        if done < 1 or seconds <= 0:
            return "", ""
        rate = done / seconds
        left = timedelta(seconds=round(max(total - done, 0) / rate))
        return f"{rate:.1f} messages/s", f"about {left} left"

    def _log_line(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._logged < self.EVERY:
            return
        self._logged = now
        rate, left = self._figures(done, total)
        share = f" ({100 * done // total} %)" if total else ""
        self.log.info("sent %d/%d%s, %s, %s", done, total, share, rate, left)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@cli.command(epilog=example("digest status wochenueberblick --week 2025-W05"))
@click.argument("newsletter", required=False)
@click.option("--week", metavar="YYYY-Www", help="ISO week of the issue to show.")
@common
def status(newsletter: str | None, week: str | None) -> None:
    """Show where the deliveries of unfinished issues stand (or of one week's issue).

    Per issue: counts per state, the rate and the time left for what is due now, when
    the next deferred delivery is retried, and the servers' last replies by code.
    Without unfinished issues, each newsletter's newest issue is shown.
    """
    from digest.delivery.status import format_status, issue_statuses
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        found = issue_statuses(settings, store, newsletter, week)
    finally:
        store.close()
    if not found:
        click.echo("no issue has gone out yet")
    for item in found:
        click.echo(format_status(item))


@cli.group(epilog=example("digest deliveries retry wochenueberblick --week 2025-W05"))
def deliveries() -> None:
    """Act on the delivery ledger of an issue."""


@deliveries.command(
    "retry", epilog=example("digest deliveries retry wochenueberblick --week 2025-W05 --failed")
)
@click.argument("newsletter")
@click.option("--week", metavar="YYYY-Www", required=True, help="ISO week of the issue.")
@click.option(
    "--failed",
    is_flag=True,
    help="Also re-queue the refused deliveries, with their attempts counted afresh "
    "(suppressed addresses stay skipped).",
)
@common
def deliveries_retry(newsletter: str, week: str, failed: bool) -> None:
    """Make NEWSLETTER's deferred deliveries of a week due now (and refused ones too).

    The next `digest send` of that week, or `digest run`, sends them.
    """
    from digest.delivery.status import requeue
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        count = requeue(settings, store, newsletter, week, failed=failed)
    finally:
        store.close()
    click.echo(
        f"{newsletter} {week}: {count} deliveries re-queued; `digest send {newsletter} "
        f"--week {week}` (or `digest run`) sends them"
    )
