"""The library functions the CLI and the scheduler call: one per command.

Each opens what it needs (store, transport), does one job and returns a report.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from digest.collect import CollectReport, collect_newsletter
from digest.config import NewsletterSettings, Settings, load_settings
from digest.deliver import (
    AudienceCounts,
    DeliveryReport,
    Personalizer,
    Progress,
    audience,
    current_recipients,
    send_issue,
)
from digest.errors import DigestError
from digest.issues import PreparedIssue, prepare_issue
from digest.mail import MessageError
from digest.segments import recipients_for
from digest.store import Store, resolve_store_url
from digest.transport import SmtpPool, Transport

__all__ = [
    "open_store",
    "collect",
    "send",
    "dry_run",
    "DryRunReport",
    "run_newsletter",
    "process_unsubscribe_mailbox",
    "process_bounce_mailbox",
]

log = logging.getLogger("digest.jobs")


def open_store(settings: Settings) -> Store:
    """The store named by the settings, migrated to the newest schema.

    ``secret_key`` keys the suppression list's address hashes.
    """
    return Store.open(
        resolve_store_url(settings.store.url, settings.base_dir), secret_key=settings.secret_key
    )


async def collect(
    settings: Settings,
    store: Store,
    newsletter_id: str | None = None,
    *,
    now: datetime | None = None,
) -> list[CollectReport]:
    """Collect every newsletter's sources (or one newsletter's)."""
    chosen = [settings.newsletter(newsletter_id)] if newsletter_id else list(settings.newsletters)
    return [await collect_newsletter(settings, store, n, now=now) for n in chosen]


async def send(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    transport: Transport,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> DeliveryReport | None:
    """Compose ``week`` (default: the previous week) and send it; None if it is empty."""
    now = now or datetime.now(UTC)
    prepared = prepare_issue(store, newsletter, week, now)
    if prepared is None or prepared.record is None:
        return None
    return await send_issue(
        settings,
        store,
        newsletter,
        prepared.record,
        prepared.issue,
        transport,
        now=now,
        progress=progress,
    )


@dataclass
class DryRunReport(AudienceCounts):
    """What a send would do now: who gets a message, who not and why, and their size.

    Counted by the same :func:`~digest.deliver.audience` as the send itself.
    """

    issue_key: str
    subject: str
    articles: int
    would_send: int
    variants: int
    largest_message: int
    largest_html: int
    failures: list[str] = field(default_factory=list)  # messages that cannot be built

    def summary(self) -> str:
        parts = [f"would send {self.would_send} messages"]
        if self.failures:
            parts.append(f"{len(self.failures)} would fail (the message cannot be built)")
        parts += self.audience_parts()
        return (
            f"dry run {self.issue_key}: {self.articles} articles, {', '.join(parts)}; "
            f"{self.variants} distinct variants; largest message "
            f"{self.largest_message / 1024:.1f} KB, largest HTML part "
            f"{self.largest_html / 1024:.1f} KB; subject: {self.subject}"
        )


def dry_run(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    *,
    now: datetime | None = None,
) -> DryRunReport | None:
    """Build every message a send would send now, without sending or writing anything."""
    now = now or datetime.now(UTC)
    prepared = prepare_issue(store, newsletter, week, now, save=False)
    if prepared is None:
        return None
    record = prepared.record
    plan = audience(
        store,
        newsletter,
        prepared.issue,
        current_recipients(store, newsletter),
        record,
        ledger_open=record is None or record.status == "composed",
    )
    personalizer = Personalizer(settings, newsletter, prepared.issue, now)
    failures: list[str] = []
    largest = largest_html = 0
    for _row, recipient in plan.to_send:
        variant = personalizer.variant_for(recipient)
        assert variant is not None
        try:
            message = personalizer.message_for(recipient, variant)
        except MessageError as exc:
            failures.append(f"{recipient.subscriber.email}: {exc}")
            continue
        largest = max(largest, len(message.data))
        largest_html = max(largest_html, len(variant.html.encode()))
    return DryRunReport(
        **vars(plan.counts),
        issue_key=prepared.issue.key,
        subject=prepared.issue.subject,
        articles=len(prepared.issue.articles),
        would_send=len(plan.to_send) - len(failures),
        variants=personalizer.variants,
        largest_message=largest,
        largest_html=largest_html,
        failures=failures,
    )


def prepared_or_error(
    store: Store, newsletter: NewsletterSettings, week: str | None, now: datetime
) -> PreparedIssue:
    prepared = prepare_issue(store, newsletter, week, now, save=False)
    if prepared is None:
        raise DigestError(
            f"newsletter {newsletter.id!r} has no articles for "
            f"{week or 'the previous week'}; run `digest collect` first"
        )
    return prepared


async def run_newsletter(config_path: str, newsletter_id: str) -> None:
    """The scheduled job: collect, compose the previous week and send it."""
    settings = load_settings(Path(config_path))
    newsletter = settings.newsletter(newsletter_id)
    store = open_store(settings)
    try:
        now = datetime.now(UTC)
        for report in await collect(settings, store, newsletter_id, now=now):
            for source in report.sources:
                if source.error:
                    log.warning(
                        "%s: source %r skipped: %s", newsletter_id, source.name, source.error
                    )
                for warning in source.warnings:
                    log.warning("%s: source %r: %s", newsletter_id, source.name, warning)
        transport = SmtpPool(settings.smtp)
        try:
            result = await send(settings, store, newsletter, None, transport, now=now)
        finally:
            await transport.close()
        if result is None:
            log.info("%s: no new articles in the previous week; nothing sent", newsletter_id)
        elif result.stopped:
            log.error("%s; the next run (or `digest send`) sends the rest", result.summary())
        else:
            log.info("%s", result.summary())
    finally:
        store.close()


async def process_unsubscribe_mailbox(config_path: str) -> None:
    """The scheduled job: apply the unsubscribe requests in the configured mailbox."""
    from digest.mailbox import open_mailbox, process_mailbox

    settings = load_settings(Path(config_path))

    def process() -> str:
        store = open_store(settings)
        try:
            with open_mailbox(settings) as mailbox:
                return process_mailbox(settings, store, mailbox).summary()
        finally:
            store.close()

    # imap-tools and the store block: keep the scheduler's event loop free meanwhile.
    log.info("unsubscribe mailbox: %s", await asyncio.to_thread(process))


async def process_bounce_mailbox(config_path: str) -> None:
    """The scheduled job: record the bounces and complaints in the bounce mailbox."""
    from digest.bounces import open_bounce_mailbox, process_bounces

    settings = load_settings(Path(config_path))

    def process() -> str:
        store = open_store(settings)
        try:
            with open_bounce_mailbox(settings) as mailbox:
                return process_bounces(settings, store, mailbox).summary()
        finally:
            store.close()

    log.info("bounce mailbox: %s", await asyncio.to_thread(process))


def preview(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    *,
    segment: str | None = None,
    subscriber: str | None = None,
    fmt: str = "html",
    now: datetime | None = None,
) -> bytes:
    """One issue as a segment or a subscriber would get it: HTML, text, .eml or a dump."""
    from digest.compose import format_issue
    from digest.segments import segment_recipient

    now = now or datetime.now(UTC)
    issue = prepared_or_error(store, newsletter, week, now).issue
    if fmt == "issue":
        return format_issue(issue).encode()
    if subscriber:
        found = store.subscriber_by_email(subscriber.strip())
        if found is None:
            raise DigestError(f"no subscriber {subscriber!r} in the store")
        matches = recipients_for(newsletter, [found])
        if not matches:
            raise DigestError(
                f"{subscriber} is in no segment of {newsletter.id!r} "
                f"(lists: {', '.join(sorted(found.lists)) or 'none'})"
            )
        recipient = matches[0]
    else:
        chosen = newsletter.segment(segment) if segment else None
        if chosen is None:
            if not newsletter.segments:
                raise DigestError(f"newsletter {newsletter.id!r} has no segments")
            chosen = newsletter.segments[0]
        recipient = segment_recipient(chosen)
    personalizer = Personalizer(settings, newsletter, issue, now)
    variant = personalizer.variant_for(recipient)
    if variant is None:
        raise DigestError(f"nothing in {issue.key} for that recipient's interests")
    message = personalizer.message_for(recipient, variant)
    if fmt == "eml":
        return message.data
    import email
    from email import policy

    parsed = email.message_from_bytes(message.data, policy=policy.default)
    part = parsed.get_body(preferencelist=("html",) if fmt == "html" else ("plain",))
    assert part is not None
    return part.get_content().encode()
