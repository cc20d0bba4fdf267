"""The embedded default job: one full cycle on the bundled demo content.

Imports the demo lists, collects the demo feeds, composes the demo week and sends it over
real SMTP, through the production code path, to a capture server started in-process that
writes each message it receives as an .eml file.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from digest import jobs
from digest.config import Settings
from digest.segments import recipients_for, segment_lists
from digest.subscribers import import_csv
from digest.transport import CaptureServer, SmtpPool

__all__ = ["run_demo"]


async def run_demo(settings: Settings, week: str, *, echo: Callable[[str], None] = print) -> None:
    """Import, collect, compose and send the demo newsletter's ``week``; print what it did."""
    newsletter = settings.newsletters[0]
    store = jobs.open_store(settings)
    try:
        categories = {c.key for c in newsletter.categories}
        for list_name in sorted(segment_lists(newsletter)):
            path = settings.base_dir / "subscribers" / f"{list_name}.csv"
            if not path.exists():
                echo(f"no demo list {path}; skipped")
                continue
            report = import_csv(
                store, path, list_name, categories=categories, regions=newsletter.regions
            )
            echo(
                f"subscribers: {path.name} → list {list_name!r}: {report.added} added, "
                f"{report.updated} updated"
            )
            for error in report.errors:
                echo(f"  warning: {error}; row skipped")

        now = datetime.now(UTC)
        for collected in await jobs.collect(settings, store, newsletter.id, now=now):
            for source in collected.sources:
                status = source.error or f"{source.articles} articles"
                echo(f"collect: {source.name}: {status}")
            echo(f"collect: {collected.new} new, {collected.updated} updated articles")

        recipients = recipients_for(newsletter, store.active_subscribers(segment_lists(newsletter)))
        per_segment = Counter(name for r in recipients for name in r.segments)
        for segment in newsletter.segments:
            echo(f"segment {segment.name!r}: {per_segment[segment.name]} subscribers")

        settings.outbox.mkdir(parents=True, exist_ok=True)
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
            f"look at one: digest preview {newsletter.id} --week {week} --format html "
            f"-o preview.html"
        )
    finally:
        store.close()
