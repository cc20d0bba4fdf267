"""Where deliveries stand, for `digest status`, and re-queueing them by hand.

An issue is shown when it is not finished (rows pending or being sent); with nothing
unfinished, a newsletter's newest issue is shown; ``--week`` picks one issue.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from digest.config import NewsletterSettings, Settings
from digest.core.errors import DigestError
from digest.issue.compose import iso_week_window
from digest.store import IssueRecord, Store
from digest.store.retries import DeliveryStatus
from digest.store.senders import STALE_SECONDS, Holder

__all__ = ["IssueStatus", "issue_statuses", "format_status", "requeue"]


@dataclass(frozen=True)
class IssueStatus:
    newsletter: NewsletterSettings
    record: IssueRecord
    deliveries: DeliveryStatus
    holders: tuple[Holder, ...] = ()  # who holds its rows in 'sending'


def _issue(store: Store, newsletter: NewsletterSettings, week: str, now: datetime) -> IssueRecord:
    key, _, _ = iso_week_window(week, newsletter.zone, now)
    record = store.get_issue(newsletter.id, key)
    if record is None:
        raise DigestError(f"newsletter {newsletter.id!r} has no issue {key} in the store")
    return record


def issue_statuses(
    settings: Settings,
    store: Store,
    newsletter_id: str | None = None,
    week: str | None = None,
    *,
    now: datetime | None = None,
) -> list[IssueStatus]:
    """The status of the chosen issues (see the module's docstring), oldest first."""
    now = now or datetime.now(UTC)
    chosen = [settings.newsletter(newsletter_id)] if newsletter_id else list(settings.newsletters)
    records: list[tuple[NewsletterSettings, IssueRecord]] = []
    for newsletter in chosen:
        if week is not None:
            records.append((newsletter, _issue(store, newsletter, week, now)))
            continue
        keys = [k for n, k in store.unfinished_issues([newsletter.id])]
        if not keys and (latest := store.latest_issue_key(newsletter.id)) is not None:
            keys = [latest]
        for key in keys:
            record = store.get_issue(newsletter.id, key)
            if record is not None:
                records.append((newsletter, record))
    found = []
    for newsletter, record in records:
        d = store.delivery_status(record.id, now)
        holders = tuple(store.holders(record.id)) if d.sending else ()
        found.append(IssueStatus(newsletter, record, d, holders))
    return found


def _when(moment: datetime, newsletter: NewsletterSettings) -> str:
    return f"{moment.astimezone(newsletter.zone):%Y-%m-%d %H:%M:%S %Z}"


def _about(span: timedelta) -> str:
    seconds = max(0, span.total_seconds())
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def _issue_state(record: IssueRecord, d: DeliveryStatus) -> str:
    """The issue's state as its ledger shows it: an issue whose first run stopped while
    planning is 'composed' in the store, but partly planned and maybe partly sent."""
    planned = d.sent + d.failed + d.skipped + d.left
    if record.status == "composed" and planned:
        return "sending, not every recipient planned yet"
    return record.status


def format_status(status: IssueStatus, now: datetime | None = None) -> str:
    """Several lines: counts per state, rate and ETA, who is sending, next retry,
    replies by code."""
    now = now or datetime.now(UTC)
    d, newsletter, record = status.deliveries, status.newsletter, status.record
    lines = [
        f"{newsletter.id} {record.key} ({_issue_state(record, d)}): {d.sent} sent, "
        f"{d.failed} failed, {d.skipped} skipped, {d.due} due now, {d.waiting} deferred "
        f"(retried automatically), {d.sending} being sent"
    ]
    rate = d.rate_per_minute
    if rate is not None:
        pace = f"  rate: {rate:.1f} messages/min"
        if d.due + d.sending:
            pace += f"; ETA for the {d.due + d.sending} due now and being sent: "
            pace += _about(timedelta(minutes=(d.due + d.sending) / rate))
        lines.append(pace)
    lines += _holder_lines(status.holders, now)
    if d.next_retry is not None:
        lines.append(
            f"  next retry: {_when(d.next_retry, newsletter)} "
            f"(in {_about(d.next_retry - now).removeprefix('about ')})"
        )
    if not d.left:
        lines.append("  finished: nothing left to send")
    by_code: dict[int | None, list[tuple[str, int]]] = defaultdict(list)
    for code, reply, n in d.replies:
        by_code[code].append((reply, n))
    if by_code:
        lines.append("  replies (failed and deferred):")
    for code, replies in sorted(by_code.items(), key=lambda item: -sum(n for _, n in item[1])):
        total = sum(n for _, n in replies)
        lines.append(f"    {code if code is not None else '---'} ×{total}")
        for reply, n in replies[:3]:
            lines.append(f"      {n}× {reply[:160]}")
    return "\n".join(lines)


def _holder_lines(holders: tuple[Holder, ...], now: datetime) -> list[str]:
    """Who is sending: each sender process (a `digest worker`'s send job, a `digest
    send` or one of its helpers) by host:pid, with its heartbeat and the rows it holds."""
    if not holders:
        return []
    lines = ["  being sent by:"]
    for holder in holders:
        if holder.heartbeat_at is None:
            lines.append(
                f"    a sender that is gone: {holder.rows} rows, taken over by the next claim"
            )
            continue
        ago = now - holder.heartbeat_at
        line = f"    {holder.host}:{holder.pid}: {holder.rows} rows, heartbeat {_about(ago)} ago"
        if ago.total_seconds() > STALE_SECONDS:
            line += "; gone (its rows are taken over by the next claim)"
        lines.append(line)
    return lines


def requeue(
    settings: Settings,
    store: Store,
    newsletter_id: str,
    week: str,
    *,
    failed: bool = False,
    now: datetime | None = None,
) -> int:
    """Make the issue's deferred deliveries due now (with ``failed``, its failed ones too).

    A failed delivery whose address has been suppressed since (a hard bounce) is not
    sent again: the next send skips it.
    """
    now = now or datetime.now(UTC)
    record = _issue(store, settings.newsletter(newsletter_id), week, now)
    return store.requeue_deliveries(record.id, failed=failed, now=now)
