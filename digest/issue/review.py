"""Review before sending: newsletters with ``review = "required"`` wait for an editor.

The scheduled run composes the issue and, instead of sending it, mails every editor a
link to it, once per issue (:func:`digest.ops.review_mail.request_review`). An editor
approves it in the web app or with ``digest approve`` (:func:`record_approval`); the
approval is stored with who and when, and :func:`digest.delivery.deliver.send_issue`
refuses to send an issue of such a newsletter without one
(:class:`~digest.core.errors.NotApproved`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from digest.config import NewsletterSettings, Settings
from digest.core.errors import NotApproved
from digest.store import Store
from digest.store.sql import transaction

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "Approved",
    "HERE",
    "LATER",
    "QUEUED",
    "is_approved",
    "record_approval",
    "require_approval",
]

#: Who sends an approved issue (:attr:`Approved.send`): the caller, now ...
HERE = "here"
#: ... a job of the cluster, queued with the approval ...
QUEUED = "queued"
#: ... or the newsletter's next scheduled run (``approved_send = "next_run"``, or a
#: week that has not ended yet).
LATER = "later"


@dataclass(frozen=True)
class Approved:
    """An approval as recorded: the issue's week, whether this was its first approval,
    and who sends the issue (:data:`HERE`, :data:`QUEUED` or :data:`LATER`)."""

    week: str
    first: bool
    send: str


def is_approved(store: Store, newsletter: NewsletterSettings, week: str) -> bool:
    """True if the issue may go out: no review needed, or an editor approved it."""
    if newsletter.review != "required":
        return True
    approval = store.approval(newsletter.id, week)
    return approval is not None and approval.approved_at is not None


def require_approval(store: Store, newsletter: NewsletterSettings, week: str) -> None:
    """NotApproved unless the issue may go out."""
    if not is_approved(store, newsletter, week):
        raise NotApproved(
            f"issue {week} of {newsletter.id!r} awaits an editor's approval "
            f'(review = "required"): approve it in /admin or with '
            f"`digest approve {newsletter.id} --week {week}`"
        )


def record_approval(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    editor: str,
    *,
    now: datetime,
    connection: Connection | None = None,
) -> Approved:
    """Approve the issue of ``week`` (default: the coming one) as ``editor``.

    With ``approved_send = "immediately"`` and a week that has ended the issue goes out
    at once: in a cluster (``[cluster] queue``) the job that sends it is queued in the
    approval's own transaction, so there is a job if and only if the approval is
    committed; on one machine the caller sends it (:data:`HERE`). With ``connection``
    both are written in the caller's transaction. An issue that has gone out cannot be
    approved (IssueReadOnly, and nothing is written).
    """
    from digest.issue.compose import iso_week_window
    from digest.issue.editing import coming_week

    key, _start, end = iso_week_window(week or coming_week(newsletter, now), newsletter.zone, now)
    due = newsletter.approved_send == "immediately" and end <= now
    with transaction(store.engine, connection) as conn:
        first = store.approve(newsletter.id, key, editor=editor, now=now, connection=conn)
        if due and settings.cluster.enabled:
            from digest.cluster.enqueue import defer_plan_issue

            defer_plan_issue(settings, conn, newsletter.id, key)
            return Approved(key, first, QUEUED)
    return Approved(key, first, HERE if due else LATER)
