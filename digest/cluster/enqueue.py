"""The jobs that the web app and the CLI hand to the cluster, each inside the transaction
of the write that calls for it: an approved issue's send, the confirmation mail of a
sign-up. The job is queued if and only if the write is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digest.cluster.app import MAIL_QUEUE, PLAN_ISSUE, defer

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from digest.config import Settings

__all__ = ["MAIL_QUEUE_LOCK", "defer_mail_queue", "defer_plan_issue", "plan_lock"]

#: The queueing lock of the mail queue's job: one waits at a time, however many sign-ups
#: call for it; it sends every mail that is due when it runs.
MAIL_QUEUE_LOCK = "mail-queue"


def plan_lock(newsletter: str, week: str) -> str:
    """The lock (and queueing lock) of the job that plans and sends one issue."""
    return f"plan:{newsletter}:{week}"


def defer_plan_issue(
    settings: Settings, connection: Connection, newsletter: str, week: str
) -> int | None:
    """Queue the job that plans and sends ``newsletter``'s issue of ``week``, in
    ``connection``'s transaction; None when one already waits (it sends the issue)."""
    lock = plan_lock(newsletter, week)
    return defer(
        settings,
        connection,
        PLAN_ISSUE,
        lock=lock,
        queueing_lock=lock,
        newsletter=newsletter,
        week=week,
    )


def defer_mail_queue(settings: Settings, connection: Connection) -> int | None:
    """Queue the job that sends the due confirmation mails, in ``connection``'s
    transaction; None when one already waits (it sends this mail too)."""
    return defer(settings, connection, MAIL_QUEUE, queueing_lock=MAIL_QUEUE_LOCK)
