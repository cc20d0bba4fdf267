"""The ``digest`` command: thin commands over the library in ``digest.ops.jobs``.

Each command parses its options, calls one library function and prints what happened.
A :class:`~digest.core.errors.DigestError` becomes one line on stderr and a non-zero exit;
``--debug`` shows the traceback instead.

No secret reaches the terminal: every error line, every log record and every traceback
goes through one :class:`~digest.core.redact.Redactor` that knows the secrets of the
environment and of the loaded settings (see :func:`digest.config.secret_values`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from digest.config import Settings, load_settings, secret_environment, secret_values
from digest.core.errors import DigestError, SourceError
from digest.core.redact import Redactor, install_log_redaction

F = TypeVar("F", bound=Callable[..., Any])


#: Masks the secrets of this process in everything the CLI prints.
redact = Redactor()


class _CannotWrite(DigestError):
    """An output file given on the command line could not be written."""


def _example(command: str) -> str:
    """The epilog of a command's --help: an example, shown after the options."""
    return f"\b\nExample:\n    {command}"


class State:
    def __init__(self) -> None:
        self.config = Path("config.toml")
        self.debug = False

    def settings(self) -> Settings:
        settings = load_settings(self.config)
        redact.add(*secret_values(settings))
        return settings


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(State).config = value


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).debug = True
        logging.getLogger("digest").setLevel(logging.DEBUG)


def common(func: F) -> F:
    """--config and --debug on every command, as on the group."""
    func = click.option(
        "--config",
        "config",
        type=click.Path(path_type=Path),
        default=None,
        expose_value=False,
        callback=_set_config,
        is_eager=True,
        help="Configuration file (default: ./config.toml).",
    )(func)
    func = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        is_eager=True,
        help="Show tracebacks and debug logging.",
    )(func)
    return func


def state() -> State:
    return click.get_current_context().ensure_object(State)


def run_async(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return asyncio.run(func(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def echo_err(message: str) -> None:
    click.echo(redact(message), err=True)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_example("digest demo"),
)
@common
def cli() -> None:
    """digest: collect a week of articles, compose a digest, send it to subscribers."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)


@cli.command(epilog=_example("digest collect wochenueberblick"))
@click.argument("newsletter", required=False)
@common
@run_async
async def collect(newsletter: str | None) -> None:
    """Fetch the sources of every newsletter (or of NEWSLETTER) and store new articles.

    A source that fails is reported and skipped; the others are still collected, and
    the exit code is 1.
    """
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        reports = await jobs.collect(settings, store, newsletter)
    finally:
        store.close()
    failed = 0
    for report in reports:
        for source in report.sources:
            if source.error:
                failed += 1
                echo_err(
                    f"warning: {report.newsletter}: source {source.name!r} skipped: {source.error}"
                )
                continue
            for warning in source.warnings:
                echo_err(f"warning: {report.newsletter}: source {source.name!r}: {warning}")
            if source.not_modified:
                click.echo(f"{report.newsletter}: {source.name}: not modified")
            else:
                click.echo(f"{report.newsletter}: {source.name}: {source.articles} articles")
        click.echo(f"{report.newsletter}: {report.new} new, {report.updated} updated")
    if failed:
        raise SystemExit(1)


@cli.command(epilog=_example("digest send wochenueberblick --week 2025-W05 --dry-run"))
@click.argument("newsletter")
@click.option(
    "--week",
    metavar="YYYY-Www",
    help="ISO week to send (default: the previous week in the newsletter's time zone).",
)
@click.option("--dry-run", is_flag=True, help="Build every message, send and record nothing.")
@common
@run_async
async def send(newsletter: str, week: str | None, dry_run: bool) -> None:
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
    """
    from digest.delivery.relays import open_transport
    from digest.ops import jobs

    settings = state().settings()
    chosen = settings.newsletter(newsletter)
    store = jobs.open_store(settings)
    try:
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


@cli.command(epilog=_example("digest status wochenueberblick --week 2025-W05"))
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


@cli.group(epilog=_example("digest deliveries retry wochenueberblick --week 2025-W05"))
def deliveries() -> None:
    """Act on the delivery ledger of an issue."""


@deliveries.command(
    "retry", epilog=_example("digest deliveries retry wochenueberblick --week 2025-W05 --failed")
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


class _progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not sys.stderr.isatty():
            self._bar = None
            return None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task("sending", total=None)

        def update(done: int, total: int) -> None:
            assert self._bar is not None
            self._bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@cli.command(
    epilog=_example(
        "digest preview wochenueberblick --week 2025-W05 --segment bayern -o bayern.html"
    )
)
@click.argument("newsletter")
@click.option("--week", metavar="YYYY-Www", help="ISO week (default: the previous week).")
@click.option("--segment", help="Preview as this segment gets it.")
@click.option("--subscriber", metavar="EMAIL", help="Preview as this subscriber gets it.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "text", "eml", "issue"]),
    default="html",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
@common
def preview(
    newsletter: str,
    week: str | None,
    segment: str | None,
    subscriber: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Show NEWSLETTER's issue as a segment or a subscriber would get it.

    Nothing is sent and nothing is written to the store.
    """
    from digest.ops import jobs

    if segment and subscriber:
        raise click.UsageError("use --segment or --subscriber, not both")
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        data = jobs.preview(
            settings,
            store,
            settings.newsletter(newsletter),
            week,
            segment=segment,
            subscriber=subscriber,
            fmt=fmt,
        )
    finally:
        store.close()
    if output:
        try:
            output.write_bytes(data)
        except OSError as exc:
            raise _CannotWrite(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output} ({len(data) / 1024:.1f} KB)")
    else:
        sys.stdout.buffer.write(data)


@cli.command(epilog=_example("digest schedules --config config.toml"))
@common
def schedules() -> None:
    """List each newsletter's schedule and its next run in local time."""
    from digest.ops.schedule import next_runs

    settings = state().settings()
    for newsletter, when in next_runs(settings, datetime.now(UTC)):
        click.echo(
            f"{newsletter.id}: '{newsletter.schedule}' ({newsletter.timezone}), "
            f"next run {when:%a %Y-%m-%d %H:%M %Z}"
        )


@cli.command(epilog=_example("digest run --config /etc/digest/config.toml"))
@common
@run_async
async def run() -> None:
    """Run the scheduler: collect, compose and send each newsletter when it is due.

    Jobs are kept in the database, so a run missed while the scheduler was down happens
    once when it comes back (within the newsletter's misfire_grace_time). Deferred
    deliveries of every unfinished issue are sent when their retry is due.
    """
    from digest.ops.jobs import open_store
    from digest.ops.schedule import run_scheduler

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
    from digest.audience.signup import run_mail_queue

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


@cli.command(epilog=_example("digest serve --port 8000"))
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
@common
def serve(host: str, port: int, rate_limit: str | None) -> None:
    """Serve the reader pages (sign-up, confirmation, preferences, one-click unsubscribe),
    the public archive of the newsletters with `archive = true` and the editors' area
    under /admin.

    It also sends the queued confirmation mail, retrying while the relay is down.

    Put it behind a TLS-terminating reverse proxy at `public_url`, on the same machine:
    the client address (for the rate limit) is then read from X-Forwarded-For, which is
    trusted from 127.0.0.1 only. Tokens in links never reach the log.
    """
    import uvicorn

    from digest.config import rate_limit_item
    from digest.ops import jobs
    from digest.web import create_app, install_token_redaction, uvicorn_log_config

    settings = state().settings()
    try:
        limit = rate_limit_item(rate_limit or settings.web.rate_limit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rate-limit") from None
    store = jobs.open_store(settings)
    install_token_redaction()  # digest's own log lines, through the root handlers
    try:
        uvicorn.run(
            create_app(settings, store, rate_limit=limit, send_mail=True),
            host=host,
            port=port,
            log_config=uvicorn_log_config(),
            server_header=False,
        )
    finally:
        store.close()


@cli.group(epilog=_example('digest sources test wochenueberblick "Land und Kommune (Seite)"'))
def sources() -> None:
    """Try sources and find new ones: test, discover."""


#: How much of each teaser `sources test` shows.
_TEASER_START = 70


@sources.command(
    "test", epilog=_example('digest sources test wochenueberblick "Land und Kommune (Seite)"')
)
@click.argument("newsletter")
@click.argument("source", required=False)
@common
@run_async
async def sources_test(newsletter: str, source: str | None) -> None:
    """Collect the sources of NEWSLETTER (or only SOURCE) without storing anything.

    Prints what each source yields: date, category, region, title and the start of the
    teaser, and every warning, so selectors can be tuned. The exit code is 1 if a
    source failed.
    """
    from digest.issue.compose import teaser_for
    from digest.sources.collect import try_sources

    settings = state().settings()
    chosen = settings.newsletter(newsletter)
    failed = 0
    for source_settings, outcome in await try_sources(settings, chosen, source):
        click.echo(f"== {source_settings.name} ({source_settings.kind}: {source_settings.url})")
        if isinstance(outcome, SourceError):
            failed += 1
            echo_err(f"warning: source {source_settings.name!r} failed: {outcome.reason}")
            continue
        for warning in outcome.warnings:
            echo_err(f"warning: source {source_settings.name!r}: {warning}")
        click.echo(f"{len(outcome.articles)} articles")
        for article in outcome.articles:
            when = article.published.astimezone(chosen.zone).strftime("%Y-%m-%d %H:%M")
            teaser = teaser_for(article.summary or article.content, _TEASER_START)
            click.echo(f"- {when}  {article.category}  {article.region or '-'}  {article.title}")
            click.echo(f"    {teaser or '(no teaser)'}")
            click.echo(f"    {article.link}")
    if failed:
        raise SystemExit(1)


@sources.command(
    "discover", epilog=_example("digest sources discover https://www.example.org/aktuelles/")
)
@click.argument("url")
@click.option(
    "--allow-private",
    is_flag=True,
    help="Allow a loopback or private address (an intranet page).",
)
@common
@run_async
async def sources_discover(url: str, allow_private: bool) -> None:
    """Fetch the page at URL and print a [[newsletters.sources]] block for it.

    The feeds the page advertises come first; without any, a kind = "html" block whose
    selectors fit the page's repeated items, with a preview of the first items. No
    configuration file is needed; with one, its user_agent is used.
    """
    from zoneinfo import ZoneInfo

    from digest.config import DEFAULT_USER_AGENT
    from digest.sources import Guest, new_http_client
    from digest.sources.discover import discover, source_block

    settings = state().settings() if state().config.exists() else None
    user_agent = settings.user_agent if settings else DEFAULT_USER_AGENT
    zone = ZoneInfo(settings.timezone if settings else "Europe/Berlin")
    async with new_http_client(user_agent) as client:
        found = await discover(
            url, client=client, guest=Guest(user_agent), allow_private=allow_private
        )
    name = found.title or url
    if found.feeds:
        click.echo(f"# {len(found.feeds)} feed(s) advertised by {found.url}")
        for feed in found.feeds:
            click.echo(f"\n# {feed.type}")
            click.echo(source_block(feed.title or name, feed.url), nl=False)
        return
    for warning in found.warnings:
        echo_err(f"warning: {warning}")
    if found.selectors is None:
        raise SystemExit(1)
    click.echo(f"# no feed advertised by {found.url}; proposed selectors for its items")
    click.echo(source_block(name, found.url, selectors=found.selectors))
    click.echo(f"# preview: {len(found.preview)} items")
    for article in found.preview[:5]:
        when = article.published.astimezone(zone).strftime("%Y-%m-%d")
        click.echo(f"#   {when}  {article.title}")
        click.echo(f"#     {article.link}")
    if not found.preview:
        raise SystemExit(1)


@cli.group(epilog=_example("digest subscribers list --list allgemein --status active"))
def subscribers() -> None:
    """Manage subscribers: import, list, export, erase."""


@subscribers.command(
    "import",
    epilog=_example(
        "digest subscribers import subscribers/allgemein.csv --list allgemein "
        '--consent "Messe 2024, Formular mit Double-Opt-in" --dry-run'
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--list", "list_name", required=True, help="List the subscribers join.")
@click.option(
    "--consent",
    required=True,
    metavar="TEXT",
    help="How these readers consented; kept as proof with each new membership.",
)
@click.option("--dry-run", is_flag=True, help="Check and count every row, write nothing.")
@common
def import_(file: Path, list_name: str, consent: str, dry_run: bool) -> None:
    """Import subscribers from a CSV file into a list.

    Columns: email, name, categories, regions, locale (categories and regions separated
    by "|"; empty means everything). Each bad row is reported with the line it starts on
    and skipped; every good row is imported, and the exit code is then 1 so that a
    script notices. Addresses are unique in any spelling: a row whose address differs
    from a stored one only in case updates that subscriber. An address on the
    suppression list (unsubscribed, bounced, complained, erased) is counted as
    suppressed and neither added nor reactivated.
    """
    from digest.audience.subscribers import import_csv
    from digest.ops import jobs

    settings = state().settings()
    categories = {c.key for n in settings.newsletters for c in n.categories}
    regions = {r for n in settings.newsletters for r in n.regions}
    store = jobs.open_store(settings)
    try:
        report = import_csv(
            store,
            file,
            list_name,
            categories=categories,
            regions=regions,
            smtputf8=settings.smtp.smtputf8,
            consent=consent,
            dry_run=dry_run,
        )
    finally:
        store.close()
    for error in report.errors:
        echo_err(f"warning: {file}: {error}; row skipped")
    for line in report.suppressed[:20]:
        echo_err(f"note: {file}: line {line}: the address is suppressed; row not imported")
    skipped = f"{len(report.errors)} skipped"
    if report.errors:
        lines = ", ".join(str(e.line) for e in report.errors[:20])
        more = ", …" if len(report.errors) > 20 else ""
        skipped += f" (lines {lines}{more})"
    click.echo(
        f"{file}: {report.imported} imported, {report.updated} updated, "
        f"{report.unchanged} unchanged, {len(report.suppressed)} suppressed, {skipped} "
        f"in list {list_name!r}" + ("; dry run, nothing written" if dry_run else "")
    )
    if report.errors:
        raise SystemExit(1)


@subscribers.command(
    "list", epilog=_example("digest subscribers list --list allgemein --status bounced")
)
@click.option("--list", "list_name", help="Only the subscribers of this list.")
@click.option(
    "--status",
    help="Only subscribers with this status (active, unsubscribed, bounced, complained, "
    "suppressed, erased).",
)
@common
def list_(list_name: str | None, status: str | None) -> None:
    """Show how many subscribers have each status, then one row per subscriber.

    Rows are tab-separated: email, name, status, lists.
    """
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        counts = store.status_counts(list_name=list_name)
        rows = store.subscriber_rows(list_name=list_name, status=status)
    finally:
        store.close()
    total = sum(counts.values())
    parts = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    where = f" in list {list_name!r}" if list_name else ""
    click.echo(f"{total} subscribers{where}" + (f": {parts}" if parts else ""))
    for subscriber, row_status in rows:
        lists = ",".join(sorted(subscriber.lists))
        click.echo(f"{subscriber.email}\t{subscriber.name}\t{row_status}\t{lists}")


@subscribers.command(
    "export",
    epilog=_example(
        "digest subscribers export anna@example.org > anna.json\n"
        "    digest subscribers export --list allgemein -o allgemein.csv"
    ),
)
@click.argument("email", required=False)
@click.option("--list", "list_name", help="Write this list as CSV (the import's columns).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
@common
def export(email: str | None, list_name: str | None, output: Path | None) -> None:
    """Export everything held about EMAIL as JSON, or a list as CSV.

    For EMAIL (DSGVO Art. 15 and 20): attributes, memberships and unsubscriptions,
    consent proofs, sign-ups (also those waiting for their confirmation) and the mail
    queued for them, every delivery (issue, time, state, SMTP reply) and the suppression
    entries of the address, also when no subscriber has it. With --list: the list's
    active subscribers, in columns the import reads back.
    """
    import json

    from digest.audience.subscribers import export_csv
    from digest.ops import jobs

    if (email is None) == (list_name is None):
        raise click.UsageError("give either EMAIL or --list NAME")
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        if list_name is not None:
            text = export_csv(store, list_name)
        else:
            assert email is not None
            document = store.personal_data(email)
            if document is None:
                raise DigestError(f"nothing is held about the address {email}")
            text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    finally:
        store.close()
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _CannotWrite(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@subscribers.command("erase", epilog=_example("digest subscribers erase anna@example.org --yes"))
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def erase(email: str, yes: bool) -> None:
    """Delete the personal data of EMAIL and never mail the address again (DSGVO Art. 17).

    The subscriber's address, name, interests, memberships and consent proofs are
    deleted, and so are sign-ups waiting for their confirmation and their queued mail;
    delivery rows keep only issue, state and time. A keyed hash of the address
    stays on the suppression list, so a later import does not add it again. An address
    nobody has is suppressed all the same, and the exit code is 1.
    """
    from digest.ops import jobs

    if not yes:
        click.confirm(f"Erase every personal data of {email}? This cannot be undone", abort=True)
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        erased = store.erase(email)
    finally:
        store.close()
    if not erased:
        raise DigestError(
            f"no subscriber or sign-up has the address {email}; it is suppressed all the same"
        )
    click.echo(f"erased {email}; the address stays on the suppression list")


@cli.command(epilog=_example("digest approve wochenueberblick --week 2025-W05 --editor erika"))
@click.argument("newsletter")
@click.option(
    "--week", metavar="YYYY-Www", help="ISO week of the issue (default: the coming issue)."
)
@click.option(
    "--editor",
    default=None,
    help="Name recorded with the approval (default: the login name of this shell).",
)
@common
@run_async
async def approve(newsletter: str, week: str | None, editor: str | None) -> None:
    """Approve NEWSLETTER's issue of a week for sending (newsletters with review = "required").

    With approved_send = "immediately" an issue whose week has ended is sent at once;
    otherwise it goes out at the next scheduled run. An issue that has gone out cannot be
    approved.
    """
    import getpass

    from digest.ops import jobs

    settings = state().settings()
    chosen = settings.newsletter(newsletter)
    store = jobs.open_store(settings)
    try:
        key, first, report = await jobs.approve(
            settings, store, chosen, week, editor or getpass.getuser()
        )
    finally:
        store.close()
    click.echo(f"{newsletter} {key}: {'approved' if first else 'was approved before'}")
    if report is not None:
        click.echo(report.summary())
        if report.stopped:
            echo_err(f"error: sending stopped: {report.stopped}. Run `digest send` again.")
            raise SystemExit(1)
    elif chosen.review == "required":
        click.echo("it goes out at the next scheduled run")


@cli.group(epilog=_example("digest editors add erika --email erika@example.org"))
def editors() -> None:
    """Accounts of the editors' area of `digest serve` (/admin)."""


@editors.command("add", epilog=_example("digest editors add erika --email erika@example.org"))
@click.argument("name")
@click.option("--email", required=True, help="Address that receives the review requests.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@common
def add_editor_command(name: str, email: str, password_stdin: bool) -> None:
    """Create the editor NAME; the password is asked twice (or read with --password-stdin).

    Only an argon2 hash of the password is stored.
    """
    from digest.issue.editors import add_editor
    from digest.ops import jobs

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        editor = add_editor(store, name, email, password)
    finally:
        store.close()
    click.echo(f"added editor {editor.name} <{editor.email}>")


@editors.command("list", epilog=_example("digest editors list"))
@common
def list_editors() -> None:
    """One tab-separated line per editor: name, email address, created."""
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        found = store.editors()
    finally:
        store.close()
    for editor in found:
        click.echo(f"{editor.name}\t{editor.email}\t{editor.created_at:%Y-%m-%d %H:%M} UTC")
    if not found:
        click.echo("no editors; add one with `digest editors add NAME --email ADDRESS`")


@editors.command("remove", epilog=_example("digest editors remove erika"))
@click.argument("name")
@common
def remove_editor(name: str) -> None:
    """Delete the editor NAME and end their logins; their edits keep their name."""
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        removed = store.remove_editor(name)
    finally:
        store.close()
    if not removed:
        raise DigestError(f"no editor named {name!r}")
    click.echo(f"removed editor {name}")


@cli.group(epilog=_example("digest dkim keygen --selector digest --domain kommune-digital.example"))
def dkim() -> None:
    """DKIM keys that sign the newsletters ([dkim] in the config)."""


@dkim.command(
    "keygen",
    epilog=_example("digest dkim keygen --selector digest --domain kommune-digital.example"),
)
@click.option("--selector", required=True, help="DKIM selector (dkim.selector).")
@click.option("--domain", required=True, help="Signing domain (dkim.domain).")
@click.option(
    "--algorithm",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="RSA 2048 bits (every receiver checks it) or Ed25519 (RFC 8463, not every one).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: <selector>.<domain>.key); the public "
    "key goes next to it with .pub.",
)
def dkim_keygen(selector: str, domain: str, algorithm: str, key_file: Path | None) -> None:
    """Write a new DKIM key pair and print the DNS TXT record that publishes it.

    Never overwrites a key: an existing file is an error. Set dkim.key_file to the
    private key once the record is published.
    """
    from digest.message.dkim import dns_record, generate_key, private_pem, public_pem, zone_line

    key_file = key_file or Path(f"{selector}.{domain}.key")
    public_file = key_file.with_name(key_file.name + ".pub")
    for path in (key_file, public_file):
        if path.exists():
            raise DigestError(f"{path} exists already; choose another --key-file")
    key = generate_key(algorithm)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        fh.write(private_pem(key))
    public_file.write_bytes(public_pem(key))
    click.echo(f"private key: {key_file} (set dkim.key_file to it)")
    click.echo(f"public key:  {public_file}")
    click.echo("DNS TXT record:")
    click.echo(zone_line(selector, domain, dns_record(key)))


@cli.group(epilog=_example("digest unsubscribes process --dry-run"))
def unsubscribes() -> None:
    """Unsubscribe requests that arrive by mail (the List-Unsubscribe mailto)."""


@unsubscribes.command("process", epilog=_example("digest unsubscribes process --dry-run"))
@click.option(
    "--dry-run", is_flag=True, help="Show what would be done; change neither store nor mailbox."
)
@common
def process_unsubscribes(dry_run: bool) -> None:
    """Apply the unsubscribe tokens in the subjects of the unread mail of [unsubscribe_mailbox].

    Each message with a valid token is processed (its subscriber unsubscribed from that
    newsletter) and marked seen, then moved or deleted as `processed` says; every other
    message stays unread where it is. Running it again changes nothing more. Tokens are
    never shown.
    """
    from digest.mailboxes.mailbox import open_mailbox, process_mailbox
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        with open_mailbox(settings) as mailbox:
            report = process_mailbox(settings, store, mailbox, dry_run=dry_run)
    finally:
        store.close()
    would = "would be " if dry_run else ""
    for result in report.results:
        if result.outcome.processed:
            click.echo(
                f"message {result.key}: {would}processed: {result.outcome.value}, "
                f"subscriber {result.subscriber_id} of {result.newsletter}"
            )
        else:
            click.echo(
                f"message {result.key} from {result.sender or '(no sender)'}: left alone: "
                f"{result.outcome.value}"
            )
    click.echo(report.summary())


@cli.group(epilog=_example("digest bounces process --dry-run"))
def bounces() -> None:
    """Bounces and complaint reports that arrive after sending (see [bounces])."""


@bounces.command("process", epilog=_example("digest bounces process --dry-run"))
@click.option(
    "--dry-run", is_flag=True, help="Show what would be done; change neither store nor mailbox."
)
@common
def process_bounces(dry_run: bool) -> None:
    """Record the bounces (DSNs) and complaint reports (ARF) in the unread mail of [bounces].

    Each report is recorded on the delivery it concerns, found by its signed return path
    or the returned message's Message-ID. A hard bounce (5.x.x) or a complaint puts the
    address on the suppression list; soft bounces (4.x.x) do past `soft_limit` within
    `soft_days`; a policy refusal (5.7.x) and a delay warning are only recorded.
    Processed messages are marked seen, then moved or deleted as `processed` says;
    everything else stays unread. Running it again changes nothing more.
    """
    from digest.mailboxes.bounces import open_bounce_mailbox
    from digest.mailboxes.bounces import process_bounces as process
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        with open_bounce_mailbox(settings) as mailbox:
            report = process(settings, store, mailbox, dry_run=dry_run)
    finally:
        store.close()
    would = "would be " if dry_run else ""
    for result in report.results:
        if result.outcome.processed:
            status = f" {result.status}" if result.status else ""
            suppressed = f", address {would}suppressed" if result.suppressed else ""
            click.echo(
                f"message {result.key}: {would}processed: {result.outcome.value}{status}, "
                f"delivery {result.delivery_id}{suppressed}"
            )
        else:
            click.echo(f"message {result.key}: left alone: {result.outcome.value}")
    click.echo(report.summary())


@cli.command(epilog=_example("digest demo --config config.toml"))
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and a non-zero exit for any DigestError.

    With ``--debug`` (and for an unexpected exception) the traceback is printed instead,
    chained exceptions included, with every known secret masked.
    """
    redact.add(*secret_environment(os.environ))
    install_log_redaction(redact)
    try:
        cli.main(args=argv, prog_name="digest", standalone_mode=False)
    except click.exceptions.Abort:
        echo_err("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DigestError as exc:
        if _debug_requested(argv):
            _print_traceback(exc)
        else:
            echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        echo_err("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: its traceback, as Python would print it, masked
        _print_traceback(exc)
        sys.exit(1)


def _print_traceback(exc: BaseException) -> None:
    sys.stderr.write(redact.format_exception(exc))
    sys.stderr.flush()


def _debug_requested(argv: list[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv)
