"""What a send would do now, counted as the send counts it; nothing sent or written.

Like the send, the dry run reads the issue's ledger and the subscribers in chunks and
never holds the whole audience: its memory does not grow with the number of readers.
Each message is built from the variant's prepared bytes and DKIM-signed, as the send
builds it, so a message the send could not build fails here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.utils import make_msgid

from digest.audience.segments import recipients_for, segment_lists
from digest.config import NewsletterSettings, Settings
from digest.core.models import DeliveryState, Recipient
from digest.delivery.planning import count_finished
from digest.delivery.report import AudienceCounts
from digest.issue.prepare import prepare_issue
from digest.mailboxes.bounces import return_path
from digest.message.dkim import signer_for
from digest.message.mail import MessageError
from digest.message.personalize import Personalizer
from digest.store import DeliveryRow, Store
from digest.store.senders import stale_before

__all__ = ["DRY_RUN_CHUNK", "DryRunReport", "dry_run"]

#: Ledger rows, and subscribers, read per query.
DRY_RUN_CHUNK = 1000
#: Messages that cannot be built are all counted; this many are kept to be shown.
FAILURES_KEPT = 100


@dataclass
class DryRunReport(AudienceCounts):
    """What a send would do now: who gets a message, who not and why, and their size.

    Counted as :func:`~digest.delivery.deliver.send_issue` counts: the same categories, and rows
    deferred by an earlier run whose retry time has not come are ``waiting``, not sent.
    """

    issue_key: str
    subject: str
    articles: int
    would_send: int = 0
    variants: int = 0
    largest_message: int = 0
    largest_html: int = 0
    would_fail: int = 0  # messages that cannot be built
    failures: list[str] = field(default_factory=list)  # the first FAILURES_KEPT of them
    waiting: int = 0  # deferred by an earlier run, not due yet: not sent now
    next_retry: datetime | None = None  # when the first of them is due
    in_flight: int = 0  # being sent by another run now, left to it
    zone: tzinfo = UTC  # in which next_retry is shown

    def summary(self) -> str:
        parts = [f"would send {self.would_send} messages"]
        if self.would_fail:
            parts.append(f"{self.would_fail} would fail (the message cannot be built)")
        if self.waiting:
            waiting = f"{self.waiting} deferred earlier, not due yet"
            if self.next_retry is not None:
                when = self.next_retry.astimezone(self.zone)
                waiting += f" (retried from {when:%Y-%m-%d %H:%M:%S %Z})"
            parts.append(waiting)
        parts += self.audience_parts()
        if self.in_flight:
            parts.append(f"{self.in_flight} being sent by another run, left to it")
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
    chunk: int = DRY_RUN_CHUNK,
) -> DryRunReport | None:
    """Build every message a send would send now, without sending or writing anything.

    First the issue's ledger, ``chunk`` rows at a time, each chunk's readers looked up
    at once; then the subscribers not in it, ``chunk`` at a time: while the issue has
    not gone out they are its audience, afterwards they subscribed after it.
    """
    now = now or datetime.now(UTC)
    prepared = prepare_issue(store, newsletter, week, now, save=False)
    if prepared is None:
        return None
    record, issue = prepared.record, prepared.issue
    report = DryRunReport(
        issue_key=issue.key,
        subject=issue.subject,
        articles=len(issue.articles),
        zone=newsletter.zone,
    )
    # The links as the send makes them (counted ones too), so the sizes are the send's.
    personalizer = Personalizer(settings, newsletter, issue, now, count_clicks=True)
    builder = _Builder(settings, newsletter, personalizer, report)
    lists = segment_lists(newsletter)
    suppressed = store.suppressed_hashes(newsletter.id)
    # Due as the send decides it: by the clock when the run starts, whatever date the
    # messages carry (``now``).
    started = datetime.now(UTC)
    if record is not None:
        live = store.live_senders(started)
        for rows in store.iter_deliveries(record.id, chunk=chunk):
            open_rows = _count_closed(rows, report, live, stale_before(started))
            current = store.subscribers_by_id(
                [row.subscriber_id for row in open_rows],
                lists,
                newsletter=newsletter.id,
                suppressed=suppressed,
            )
            reached = {r.subscriber.id: r for r in recipients_for(newsletter, current.values())}
            for row in open_rows:
                recipient = reached.get(row.subscriber_id)
                if recipient is None:
                    report.unsubscribed_since += 1
                elif (retry := _retry_after(row, started)) is not None:
                    report.waiting += 1
                    report.next_retry = min(retry, report.next_retry or retry)
                else:
                    builder.build(row, recipient)
    # The audience is fixed once the issue's ledger is planned (it leaves 'composed').
    ledger_open = record is None or record.status == "composed"
    for found in store.iter_active_subscribers(
        lists,
        newsletter=newsletter.id,
        chunk=chunk,
        not_in_issue=record.id if record is not None else None,
        suppressed=suppressed,
    ):
        if ledger_open:
            for recipient in recipients_for(newsletter, found):
                builder.build(None, recipient)
        else:
            report.subscribed_after += len(found)
    report.variants = builder.personalizer.variants
    return report


def _count_closed(
    rows: Iterable[DeliveryRow], report: DryRunReport, live: set[int], stale: datetime
) -> list[DeliveryRow]:
    """Count the rows no run sends now; the others (pending, or left in 'sending' by a
    sender that is gone, see digest.store.senders) are returned."""
    left = []
    for row in rows:
        if count_finished(row, report):
            continue
        if row.state == DeliveryState.SENDING and (
            row.claimed_by in live
            if row.claimed_by is not None
            else row.updated_at is None or row.updated_at >= stale
        ):
            report.in_flight += 1
        else:
            left.append(row)
    return left


def _retry_after(row: DeliveryRow, started: datetime) -> datetime | None:
    """When the row is due again, if it waits for a retry time after ``started`` (see
    digest.store.retries.due_now); else None."""
    if row.state != DeliveryState.PENDING or row.next_attempt_at is None:
        return None
    return row.next_attempt_at if row.next_attempt_at > started else None


class _Builder:
    """Builds one recipient's message as the send would and counts the outcome."""

    def __init__(
        self,
        settings: Settings,
        newsletter: NewsletterSettings,
        personalizer: Personalizer,
        report: DryRunReport,
    ) -> None:
        self.settings = settings
        self.newsletter = newsletter
        self.personalizer = personalizer
        self.report = report
        self.signer = signer_for(settings, newsletter.sender_domain)
        self.id_prefix = f"{newsletter.id}.{personalizer.issue.key}"
        self.sized: set[str] = set()  # variants whose HTML size is counted

    def build(self, row: DeliveryRow | None, recipient: Recipient) -> None:
        report = self.report
        variant = self.personalizer.variant_for(recipient)
        if variant is None:
            report.skipped += 1
            return
        # A row tried before keeps its Message-ID; a new one gets one as the send's
        # claim would give it. A recipient not yet in the ledger has no delivery id for
        # the return path: 0 stands in (the return path is not part of the bytes).
        message_id = (row.message_id if row is not None else None) or make_msgid(
            idstring=self.id_prefix, domain=self.newsletter.sender_domain
        )
        try:
            message = self.personalizer.fast_message_for(
                recipient,
                variant,
                message_id,
                envelope_from=return_path(
                    self.settings, self.newsletter, row.id if row is not None else 0
                ),
                signer=self.signer,
            )
        except MessageError as exc:
            report.would_fail += 1
            if len(report.failures) < FAILURES_KEPT:
                report.failures.append(f"{recipient.subscriber.email}: {exc}")
            return
        report.would_send += 1
        report.largest_message = max(report.largest_message, len(message.data))
        if variant.content_key not in self.sized:
            self.sized.add(variant.content_key)
            report.largest_html = max(report.largest_html, len(variant.html.encode()))
