"""The delivery ledger's retry side: deferred rows, due rows, re-queueing, status.

A deferred row is ``pending`` with ``next_attempt_at`` in the future: no run claims it
before then (see :func:`due_now`, which every claim of a pending row must include).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select, update

from digest.core.models import DeliveryState
from digest.store import schema as t
from digest.store.senders import HEARTBEAT_SECONDS, held_by_gone_sender

__all__ = ["DeliveryStatus", "RetryStore", "due_now"]


def due_now(now: datetime) -> ColumnElement[bool]:
    """SQL condition: the row is not deferred past ``now``."""
    column = t.deliveries.c.next_attempt_at
    return or_(column.is_(None), column <= now)


@dataclass
class DeliveryStatus:
    """Where one issue's ledger stands: counts, pace, the next retry, recent replies.

    ``waiting`` counts pending rows deferred to a later time; ``due`` the pending rows
    any run may claim now (never tried, or whose retry time has come).
    """

    issue_id: int
    due: int = 0
    waiting: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    next_retry: datetime | None = None
    first_attempt: datetime | None = None
    last_sent: datetime | None = None
    # (code, reply) of failed and deferred rows, most frequent first.
    replies: list[tuple[int | None, str, int]] = field(default_factory=list)

    @property
    def left(self) -> int:
        """Rows not finished: due, waiting for a retry, or being sent."""
        return self.due + self.waiting + self.sending

    @property
    def rate_per_minute(self) -> float | None:
        """Messages accepted per minute between the first answer and the last success
        (a second at least: a small issue is answered in one batch)."""
        if not self.sent or self.first_attempt is None or self.last_sent is None:
            return None
        seconds = (self.last_sent - self.first_attempt).total_seconds()
        return self.sent * 60 / max(1.0, seconds)


class RetryStore:
    """Deferring, re-queueing and counting ledger rows on the store's engine."""

    engine: Engine

    def defer_delivery(
        self,
        delivery_id: int,
        *,
        code: int | None,
        reply: str,
        until: datetime,
        now: datetime | None = None,
    ) -> None:
        """Put a claimed row back to pending, not to be claimed before ``until``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.deliveries)
                .where(t.deliveries.c.id == delivery_id)
                .values(
                    state=DeliveryState.PENDING,
                    smtp_code=code,
                    smtp_reply=reply[:2000],
                    next_attempt_at=until,
                    updated_at=now or datetime.now(UTC),
                )
            )

    def unfinished_issues(self, newsletters: list[str] | None = None) -> list[tuple[str, str]]:
        """(newsletter, key) of every issue that went out and has rows left, oldest first.

        Also an issue whose first run stopped before its whole audience was planned (still
        'composed', with ledger rows): the next run plans the rest.
        """
        i, d = t.issues.c, t.deliveries.c
        started = select(d.id).where(d.issue_id == i.id).exists()
        query = select(i.newsletter, i.key).where(
            or_(i.status == "sending", and_(i.status == "composed", started))
        )
        if newsletters is not None:
            query = query.where(t.issues.c.newsletter.in_(newsletters))
        with self.engine.connect() as conn:
            return [(n, k) for n, k in conn.execute(query.order_by(t.issues.c.id)).all()]

    def latest_issue_key(self, newsletter: str) -> str | None:
        """The key of the newsletter's most recently created issue, if any."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.issues.c.key)
                .where(t.issues.c.newsletter == newsletter)
                .order_by(t.issues.c.id.desc())
                .limit(1)
            ).scalar()

    def due_deliveries(self, issue_id: int, now: datetime) -> int:
        """How many rows of the issue a run may act on now: pending rows that are due,
        and rows being sent (taken over once their sender is gone)."""
        d = t.deliveries.c
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        d.issue_id == issue_id,
                        or_(
                            and_(d.state == DeliveryState.PENDING, due_now(now)),
                            d.state == DeliveryState.SENDING,
                        ),
                    )
                ).scalar_one()
            )

    def takeable_deliveries(self, issue_id: int, now: datetime | None = None) -> int:
        """How many rows of the issue a sender may take now or within the stale bound:
        pending rows that are due, and rows in 'sending' whose sender is gone or silent
        (no heartbeat for twice its interval; see :meth:`SenderStore.next_takeover`).
        Rows a live sender holds are not counted: that one sends them."""
        d = t.deliveries.c
        now = now or datetime.now(UTC)
        silent = now - timedelta(seconds=2 * HEARTBEAT_SECONDS)
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        d.issue_id == issue_id,
                        or_(
                            and_(d.state == DeliveryState.PENDING, due_now(now)),
                            and_(d.state == DeliveryState.SENDING, held_by_gone_sender(silent)),
                        ),
                    )
                ).scalar_one()
            )

    def waiting_deliveries(self, issue_id: int, now: datetime) -> list[tuple[int, int]]:
        """(delivery id, subscriber id) of the issue's rows deferred past ``now``."""
        d = t.deliveries.c
        with self.engine.connect() as conn:
            return [
                (int(i), int(s))
                for i, s in conn.execute(
                    select(d.id, d.subscriber_id)
                    .where(
                        d.issue_id == issue_id,
                        d.state == DeliveryState.PENDING,
                        d.next_attempt_at > now,
                    )
                    .order_by(d.id)
                ).all()
            ]

    def requeue_deliveries(
        self, issue_id: int, *, failed: bool = False, now: datetime | None = None
    ) -> int:
        """Make the issue's deferred rows due now; with ``failed`` also its failed rows,
        counted afresh (attempts and age). Returns the number of rows changed."""
        now = now or datetime.now(UTC)
        d = t.deliveries.c
        with self.engine.begin() as conn:
            waiting = conn.execute(
                update(t.deliveries)
                .where(
                    d.issue_id == issue_id,
                    d.state == DeliveryState.PENDING,
                    d.next_attempt_at.is_not(None),
                )
                .values(next_attempt_at=None, updated_at=now)
            ).rowcount
            refused = 0
            if failed:
                refused = conn.execute(
                    update(t.deliveries)
                    .where(d.issue_id == issue_id, d.state == DeliveryState.FAILED)
                    .values(
                        state=DeliveryState.PENDING,
                        attempts=0,
                        first_attempt_at=None,
                        next_attempt_at=None,
                        updated_at=now,
                    )
                ).rowcount
                if refused:
                    conn.execute(
                        update(t.issues)
                        .where(t.issues.c.id == issue_id, t.issues.c.status == "sent")
                        .values(status="sending")
                    )
        return int(waiting or 0) + int(refused or 0)

    def delivery_status(self, issue_id: int, now: datetime, *, replies: int = 10) -> DeliveryStatus:
        """Counts per state, the next retry and the most frequent refusals of one issue."""
        d = t.deliveries.c
        status = DeliveryStatus(issue_id)
        pending = d.state == DeliveryState.PENDING
        waiting = and_(pending, d.next_attempt_at > now)
        with self.engine.connect() as conn:
            for state, n in conn.execute(
                select(d.state, func.count()).where(d.issue_id == issue_id).group_by(d.state)
            ).all():
                if state == DeliveryState.PENDING:
                    status.due += int(n)
                elif state in (
                    DeliveryState.SENDING,
                    DeliveryState.SENT,
                    DeliveryState.FAILED,
                    DeliveryState.SKIPPED,
                ):
                    setattr(status, state, getattr(status, state) + int(n))
            status.waiting = int(
                conn.execute(
                    select(func.count()).where(d.issue_id == issue_id, waiting)
                ).scalar_one()
            )
            status.due -= status.waiting
            status.next_retry = conn.execute(
                select(func.min(d.next_attempt_at)).where(d.issue_id == issue_id, waiting)
            ).scalar()
            status.first_attempt = conn.execute(
                select(func.min(d.first_attempt_at)).where(d.issue_id == issue_id)
            ).scalar()
            status.last_sent = conn.execute(
                select(func.max(d.updated_at)).where(
                    d.issue_id == issue_id, d.state == DeliveryState.SENT
                )
            ).scalar()
            counted: Counter[tuple[int | None, str]] = Counter()
            for code, reply, n in conn.execute(
                select(d.smtp_code, d.smtp_reply, func.count())
                .where(
                    d.issue_id == issue_id,
                    or_(d.state == DeliveryState.FAILED, and_(pending, d.smtp_reply.is_not(None))),
                )
                .group_by(d.smtp_code, d.smtp_reply)
            ).all():
                counted[(code, " ".join((reply or "").split()))] += int(n)
        status.replies = [(c, r, n) for (c, r), n in counted.most_common(replies)]
        return status
