"""The embedded default job: one full cycle on the bundled demo content.

Imports the demo lists, collects the demo feeds, composes the demo week and sends it over
real SMTP, through the production code path, to a capture server started in-process that
writes each message it receives as an .eml file.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from digest.audience.segments import recipients_for, segment_lists
from digest.audience.subscribers import ImportReport, import_csv
from digest.config import NewsletterSettings, Settings
from digest.delivery.capture import CaptureServer
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.store import Store

__all__ = ["command_prefix", "import_demo_lists", "run_demo"]

#: The consent statement kept for the demo lists' made-up readers.
DEMO_CONSENT = "Demo data: fictitious readers shipped with digest"


def command_prefix(cwd: Path | None = None) -> str:
    """How the user can call ``digest`` from ``cwd``, for the hints the demo prints.

    ``make run`` installs into ``.venv`` without putting it on the PATH, so a bare
    ``digest`` is right only when the PATH finds this very program; otherwise the script
    beside the running interpreter, else the interpreter running the module.
    """
    cwd = Path.cwd() if cwd is None else cwd
    script = Path(sys.executable).parent / "digest"
    found = shutil.which("digest")
    if found is not None:
        found_path = Path(found).resolve()
        if found_path in {script.resolve(), Path(sys.argv[0]).resolve()}:
            return "digest"
    if script.is_file():
        relative = os.path.relpath(script, cwd)
        if relative.startswith(".."):
            # A path climbing out of the current directory reads worse than the full one.
            return shlex.quote(str(script))
        # Without a slash the shell would look the name up on the PATH again.
        return shlex.quote(relative if os.sep in relative else f".{os.sep}{relative}")
    return f"{shlex.quote(sys.executable)} -m digest.cli"


def import_demo_lists(
    settings: Settings, store: Store, newsletter: NewsletterSettings
) -> list[ImportReport]:
    """Import ``subscribers/<list>.csv`` for every list the newsletter's segments use.

    Lists are imported in name order, so subscriber ids (and the tokens that sign
    them) are the same on every fresh run.
    """
    reports = []
    categories = {c.key for c in newsletter.categories}
    for list_name in sorted(segment_lists(newsletter)):
        path = settings.base_dir / "subscribers" / f"{list_name}.csv"
        if path.exists():
            reports.append(
                import_csv(
                    store,
                    path,
                    list_name,
                    categories=categories,
                    regions=newsletter.regions,
                    consent=DEMO_CONSENT,
                )
            )
    return reports


async def run_demo(settings: Settings, week: str, *, echo: Callable[[str], None] = print) -> None:
    """Import, collect, compose and send the demo newsletter's ``week``; print what it did."""
    newsletter = settings.newsletters[0]
    store = jobs.open_store(settings)
    try:
        for report in import_demo_lists(settings, store, newsletter):
            echo(
                f"subscribers: {Path(report.path).name} → list {report.list_name!r}: "
                f"{report.added} added, {report.updated} updated"
            )
            for error in report.errors:
                echo(f"  warning: {error}; row skipped")

        now = datetime.now(UTC)
        for collected in await jobs.collect(settings, store, newsletter.id, now=now):
            for source in collected.sources:
                status = source.error or f"{source.articles} articles"
                echo(f"collect: {source.name}: {status}")
            echo(f"collect: {collected.new} new, {collected.updated} updated articles")

        subscribers = store.active_subscribers(segment_lists(newsletter), newsletter=newsletter.id)
        recipients = recipients_for(newsletter, subscribers)
        per_segment = Counter(name for r in recipients for name in r.segments)
        for segment in newsletter.segments:
            echo(f"segment {segment.name!r}: {per_segment[segment.name]} subscribers")

        settings.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with CaptureServer(settings.outbox) as capture:
            smtp = dataclasses.replace(
                settings.smtp,
                host=capture.host,
                port=capture.port,
                security="none",
                username="",
                password="",
            )
            transport = SmtpPool(smtp)
            try:
                result = await jobs.send(settings, store, newsletter, week, transport, now=now)
            finally:
                await transport.close()
        if result is None:
            echo(f"{newsletter.id}: no articles in {week}; nothing sent")
            return
        echo(result.summary())
        if result.already_sent and not result.sent:
            echo("(this week was sent before; delete digest.db and outbox/ to start over)")
        echo(f"outbox: {len(capture.messages)} messages written to {settings.outbox}/")
        echo(
            f"look at one: {command_prefix()} preview {newsletter.id} --week {week} --format html "
            f"-o preview.html"
        )
    finally:
        store.close()
