"""What editors see of an issue and of a newsletter after the send: counts only.

Mixed into :class:`~digest.store.Store`. Every answer is a number or a list of times,
read from what the store keeps anyway (the delivery ledger, memberships, consents,
unsubscriptions) and the click counts; none names a reader.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, case, exists, func, select
from sqlalchemy.orm import aliased

from digest.core.models import DeliveryState
from digest.store import schema as t

__all__ = ["IssueDeliveries", "InsightStore", "READER_EVENTS"]

#: What happens to a newsletter's readers, week by week (see InsightStore.reader_events).
READER_EVENTS = ("joined", "confirmed", "left", "bounced")


@dataclass(frozen=True)
class IssueDeliveries:
    """An issue's ledger in numbers."""

    sent: int = 0
    deferred: int = 0  # not sent yet: waiting for a retry, or being sent
    failed: int = 0
    skipped: int = 0
    bounced: int = 0  # sent, then came back: hard, soft or policy
    complaints: int = 0
    unsubscribes: int = 0  # see InsightStore.unsubscribes_after


class InsightStore:
    """Figures of issues and newsletters."""

    engine: Engine

    def issue_deliveries(self, issue_id: int) -> IssueDeliveries:
        """The issue's deliveries per state, its bounces and complaints, and the
        unsubscribes that followed it (:meth:`unsubscribes_after`)."""
        d = t.deliveries.c
        with self.engine.connect() as conn:
            states: dict[str, int] = dict(
                conn.execute(
                    select(d.state, func.count()).where(d.issue_id == issue_id).group_by(d.state)
                ).all()
            )
            bounces: dict[str, int] = dict(
                conn.execute(
                    select(d.bounce, func.count())
                    .where(d.issue_id == issue_id, d.bounce.is_not(None))
                    .group_by(d.bounce)
                ).all()
            )
        return IssueDeliveries(
            sent=int(states.get(DeliveryState.SENT, 0)),
            deferred=int(
                states.get(DeliveryState.PENDING, 0) + states.get(DeliveryState.SENDING, 0)
            ),
            failed=int(states.get(DeliveryState.FAILED, 0)),
            skipped=int(states.get(DeliveryState.SKIPPED, 0)),
            bounced=int(sum(bounces.get(kind, 0) for kind in ("hard", "soft", "policy"))),
            complaints=int(bounces.get("complaint", 0)),
            unsubscribes=self.unsubscribes_after(issue_id),
        )

    def unsubscribes_after(self, issue_id: int) -> int:
        """Readers who left the issue's newsletter after this issue reached them and
        before another of its issues did.

        Unsubscribe links name the reader and the newsletter, not the issue: a withdrawal
        is put down to the last issue of the newsletter the reader was sent before it,
        whichever way it came (the link, the mail to the sender, the preference page).
        """
        u, d, i = t.unsubscriptions.c, t.deliveries, t.issues
        later, later_issue = aliased(t.deliveries), aliased(t.issues)
        newsletter = select(i.c.newsletter).where(i.c.id == issue_id).scalar_subquery()
        sent = DeliveryState.SENT
        statement = (
            select(func.count())
            .select_from(t.unsubscriptions)
            .join(
                d,
                and_(
                    d.c.subscriber_id == u.subscriber_id,
                    d.c.issue_id == issue_id,
                    d.c.state == sent,
                    d.c.updated_at <= u.created_at,
                ),
            )
            .where(
                u.newsletter == newsletter,
                ~exists().where(
                    later.c.subscriber_id == u.subscriber_id,
                    later.c.state == sent,
                    later.c.issue_id == later_issue.c.id,
                    later_issue.c.newsletter == u.newsletter,
                    later.c.updated_at > d.c.updated_at,
                    later.c.updated_at <= u.created_at,
                ),
            )
        )
        with self.engine.connect() as conn:
            return int(conn.execute(statement).scalar_one())

    def reader_events(
        self, newsletter: str, lists: Collection[str], since: datetime
    ) -> dict[str, list[datetime]]:
        """When, since ``since``, readers ``joined`` the newsletter (came onto one of its
        ``lists`` for the first time: an import or a confirmed sign-up), ``confirmed`` a
        sign-up to it (double opt-in), ``left`` it (unsubscribed) and ``bounced`` (an
        issue of it hard-bounced for them: their first such bounce). One time per event;
        what an erasure deleted is not among them.
        """
        m, c, u, d = t.memberships.c, t.consents.c, t.unsubscriptions.c, t.deliveries.c
        first_joined = func.min(m.created_at)
        first_bounce = func.min(d.bounced_at)
        queries = {
            "joined": select(first_joined)
            .where(m.list_name.in_(list(lists) or [""]))
            .group_by(m.subscriber_id)
            .having(first_joined >= since),
            "confirmed": select(c.confirmed_at).where(
                c.newsletter == newsletter, c.source == "signup", c.confirmed_at >= since
            ),
            "left": select(u.created_at).where(u.newsletter == newsletter, u.created_at >= since),
            "bounced": select(first_bounce)
            .join(t.issues, t.issues.c.id == d.issue_id)
            .where(t.issues.c.newsletter == newsletter, d.bounce == "hard")
            .group_by(d.subscriber_id)
            .having(first_bounce >= since),
        }
        with self.engine.connect() as conn:
            return {
                event: [at for at in conn.execute(query).scalars() if at is not None]
                for event, query in queries.items()
            }

    def issue_reads(self, issue_ids: Collection[int]) -> dict[int, int]:
        """Reads (clicks not from scanners) per issue."""
        c = t.click_counts.c
        if not issue_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.issue_id, func.sum(case((c.kind == "read", c.count), else_=0)))
                .where(c.issue_id.in_(list(issue_ids)))
                .group_by(c.issue_id)
            ).all()
        return {int(issue_id): int(n or 0) for issue_id, n in rows}
