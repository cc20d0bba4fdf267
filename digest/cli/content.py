"""Commands on what goes into an issue: collect, sources, preview, approve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from digest.cli.base import CannotWrite, cli, common, echo_err, example, run_async, state
from digest.core.errors import SourceError

if TYPE_CHECKING:
    from digest.core.models import Article


@cli.command(epilog=example("digest collect wochenueberblick --force"))
@click.argument("newsletter", required=False)
@click.option(
    "--force",
    is_flag=True,
    help="Fetch every source in full, also when the server says it has not changed "
    "(after changing a source's selectors).",
)
@common
@run_async
async def collect(newsletter: str | None, force: bool) -> None:
    """Fetch the sources of every newsletter (or of NEWSLETTER) and store new articles.

    Articles already stored are updated with what the sources say now. A source that
    fails is reported and skipped; the others are still collected, and the exit code
    is 1.
    """
    from digest.ops import jobs

    settings = state().settings()
    store = jobs.open_store(settings)
    try:
        reports = await jobs.collect(settings, store, newsletter, force=force)
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
                click.echo(
                    f"{report.newsletter}: {source.name}: not modified since the last "
                    "collect (--force fetches it in full)"
                )
            else:
                click.echo(f"{report.newsletter}: {source.name}: {source.articles} articles")
        click.echo(f"{report.newsletter}: {report.new} new, {report.updated} updated")
    if failed:
        raise SystemExit(1)


@cli.group(epilog=example('digest sources test wochenueberblick "Land und Kommune (Seite)"'))
def sources() -> None:
    """Try sources and find new ones: test, discover."""


#: Width of the lines `sources test` wraps teasers to.
_WRAP = 100


@sources.command(
    "test", epilog=example('digest sources test wochenueberblick "Land und Kommune (Seite)"')
)
@click.argument("newsletter")
@click.argument("source", required=False)
@click.option(
    "--full",
    is_flag=True,
    help="Show the whole text of each item, not only the teaser readers get.",
)
@common
@run_async
async def sources_test(newsletter: str, source: str | None, full: bool) -> None:
    """Collect the sources of NEWSLETTER (or only SOURCE) without storing anything.

    Prints what each source yields: date, category, region, title and the teaser as
    readers get it (cut to the newsletter's teaser_length; --full: the whole text), and
    every warning, so selectors can be tuned. The exit code is 1 if a source failed.
    """
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
            click.echo(f"- {when}  {article.category}  {article.region or '-'}  {article.title}")
            for line in _teaser_lines(article, chosen.teaser_length, full=full):
                click.echo(f"    {line}")
            click.echo(f"    {article.link}")
    if failed:
        raise SystemExit(1)


#: How much of each teaser the preview of `sources discover` shows.
_PREVIEW_TEASER = 160


def _teaser_lines(article: Article, limit: int, *, full: bool) -> list[str]:
    """The teaser of ``article`` as compose makes it (or, ``full``, its whole text),
    wrapped; "(no teaser)" when it has none."""
    import textwrap

    from digest.issue.compose import plain_text, teaser_for

    if full:
        teaser = plain_text(article.summary) or plain_text(article.content)
    else:
        teaser = teaser_for(article.summary, limit) or teaser_for(article.content, limit)
    lines = textwrap.wrap(teaser, _WRAP, break_long_words=False, break_on_hyphens=False)
    return lines or ["(no teaser)"]


@sources.command(
    "discover", epilog=example("digest sources discover https://www.example.org/aktuelles/")
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

    The feeds the page advertises come first (the site's own before comment feeds);
    without any, a kind = "html" block whose selectors fit the page's repeated dated
    items, with a preview of the first items. A page without such items is named as
    such, and nothing is proposed (exit code 1). With --allow-private the block has
    allow_private = true. No configuration file is needed; with one, its user_agent is
    used.
    """
    from zoneinfo import ZoneInfo

    from digest.config import DEFAULT_USER_AGENT
    from digest.issue.compose import teaser_for
    from digest.sources import Guest, new_http_client
    from digest.sources.discover import discover, feed_names, source_block

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
        for feed, feed_name in zip(found.feeds, feed_names(found.feeds, name), strict=True):
            click.echo(f"\n# {feed.type}")
            block = source_block(feed_name, feed.url, allow_private=allow_private)
            click.echo(block, nl=False)
        return
    for warning in found.warnings:
        echo_err(f"warning: {warning}")
    if found.selectors is None:
        raise SystemExit(1)
    click.echo(f"# no feed advertised by {found.url}; proposed selectors for its items")
    block = source_block(name, found.url, selectors=found.selectors, allow_private=allow_private)
    click.echo(block)
    click.echo(f"# preview: {len(found.preview)} items")
    for article in found.preview[:5]:
        when = article.published.astimezone(zone).strftime("%Y-%m-%d")
        label = f"[{article.label}] " if article.label else ""
        click.echo(f"#   {when}  {label}{article.title}")
        click.echo(f"#     {article.link}")
        if teaser := teaser_for(article.summary, _PREVIEW_TEASER):
            click.echo(f"#     teaser: {teaser}")
        if article.image is not None:
            click.echo(f"#     image: {article.image.url}")
    if not found.preview:
        raise SystemExit(1)


@cli.command(
    epilog=example(
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
    help="Write to this file instead of stdout (readable by its owner only).",
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
        from digest.core.files import write_private

        try:
            write_private(output, data)  # a subscriber's copy holds their address and links
        except OSError as exc:
            raise CannotWrite(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"wrote {output} ({len(data) / 1024:.1f} KB)")
    else:
        sys.stdout.buffer.write(data)


@cli.command(epilog=example("digest approve wochenueberblick --week 2025-W05 --editor erika"))
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

    With approved_send = "immediately" an issue whose week has ended is sent at once (in
    a cluster: a worker sends it, queued with the approval); otherwise it goes out at the
    next scheduled run. An issue that has gone out cannot be approved.
    """
    import getpass
    from datetime import UTC, datetime

    from digest.issue.review import QUEUED, record_approval
    from digest.ops import jobs

    settings = state().settings()
    chosen = settings.newsletter(newsletter)
    store = jobs.open_store(settings)
    try:
        now = datetime.now(UTC)
        approved = record_approval(
            settings, store, chosen, week, editor or getpass.getuser(), now=now
        )
        report = await jobs.send_approved(settings, store, chosen, approved, now=now)
    finally:
        store.close()
    done = "approved" if approved.first else "was approved before"
    click.echo(f"{newsletter} {approved.week}: {done}")
    if report is not None:
        click.echo(report.summary())
        if report.stopped:
            echo_err(f"error: sending stopped: {report.stopped}. Run `digest send` again.")
            raise SystemExit(1)
    elif approved.send == QUEUED:
        click.echo("its send is queued: a `digest worker` sends it")
    elif chosen.review == "required":
        click.echo("it goes out at the next scheduled run")
