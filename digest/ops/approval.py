"""Approving an issue from the CLI or a library caller, and sending it when that is
this process's part (one machine, ``approved_send = "immediately"``, a week that has
ended). What an approval writes, and the job it queues in a cluster, is
:func:`digest.issue.review.record_approval`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from digest.config import NewsletterSettings, Settings
from digest.delivery.deliver import send_issue
from digest.delivery.report import DeliveryReport
from digest.delivery.transport import SmtpPool, Transport
from digest.issue.prepare import prepare_issue
from digest.issue.review import HERE, Approved, record_approval
from digest.store import Store

__all__ = ["approve", "send_approved"]


async def approve(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    editor: str,
    *,
    now: datetime | None = None,
    transport: Transport | None = None,
) -> tuple[str, bool, DeliveryReport | None]:
    """Approve the issue of ``week`` (default: the coming one) as ``editor``.

    Returns the week, whether this was the first approval, and the report of the send
    it started (with ``approved_send = "immediately"`` and a week that has ended), else
    None (also when the week has no articles). In a cluster that send is a job queued
    with the approval (see :func:`~digest.issue.review.record_approval`) and the report
    is None. An issue that has gone out cannot be approved (IssueReadOnly).
    """
    now = now or datetime.now(UTC)
    approved = record_approval(settings, store, newsletter, week, editor, now=now)
    report = await send_approved(
        settings, store, newsletter, approved, now=now, transport=transport
    )
    return approved.week, approved.first, report


async def send_approved(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    approved: Approved,
    *,
    now: datetime | None = None,
    transport: Transport | None = None,
) -> DeliveryReport | None:
    """Send an approved issue that this process is to send now (``approved.send`` is
    :data:`~digest.issue.review.HERE`): its report; None for any other approval."""
    if approved.send != HERE:
        return None
    own = transport is None
    pool = transport or SmtpPool(settings.smtp)
    now = now or datetime.now(UTC)
    try:
        # As `digest send` does (digest.ops.jobs.send): compose the week, send it.
        prepared = prepare_issue(store, newsletter, approved.week, now)
        if prepared is None or prepared.record is None:
            return None
        return await send_issue(
            settings, store, newsletter, prepared.record, prepared.issue, pool, now=now
        )
    finally:
        if own:
            await pool.close()
