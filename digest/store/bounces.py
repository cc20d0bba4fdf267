"""Bounces and complaints that arrive after the SMTP transaction, on the delivery ledger.

Mixed into :class:`~digest.store.Store`. A bounce is kept on the delivery row it
concerns (the worst one the row had) and, as its kind demands, puts the address on the
suppression list in the same transaction. See :mod:`digest.mailboxes.bounces` for where they come
from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, update

from digest.store import schema as t
from digest.store.privacy import leave_active, suppress_in

__all__ = ["BOUNCE_KINDS", "BounceStore", "RecordedBounce"]

#: What can come back for a delivery, from least to most severe. A row keeps the most
#: severe one it got.
BOUNCE_KINDS = ("delayed", "soft", "policy", "hard", "complaint")

#: The suppression reason each kind gives the address (for all newsletters), if any.
_SUPPRESSES = {"hard": "hard_bounce", "complaint": "complaint"}


@dataclass(frozen=True)
class RecordedBounce:
    """What recording one bounce did: kept on the row, and the address suppressed now."""

    recorded: bool
    suppressed: str | None  # the suppression reason, when this bounce added it
    soft_count: int = 0  # soft bounces of the address within the window, this one included


class BounceStore:
    """Find the delivery of a bounce and record the bounce on it."""

    engine: Engine

    if TYPE_CHECKING:

        def address_hash(self, address: str) -> str: ...  # PrivacyStore's

    def deliveries_with_message_ids(self, message_ids: Sequence[str]) -> list[tuple[int, str]]:
        """(id, address) of each delivery sent with one of ``message_ids``, by id.

        A Message-ID is seen by its reader: the caller must check the address too
        before it acts on a report that names a delivery by Message-ID alone.
        """
        if not message_ids:
            return []
        with self.engine.connect() as conn:
            found = conn.execute(
                select(t.deliveries.c.id, t.deliveries.c.email)
                .where(t.deliveries.c.message_id.in_(list(dict.fromkeys(message_ids))))
                .order_by(t.deliveries.c.id)
            ).all()
        return [(int(row.id), str(row.email or "")) for row in found]

    def record_bounce(
        self,
        delivery_id: int,
        kind: str,
        *,
        status: str | None,
        diagnostic: str | None,
        now: datetime,
        soft_limit: int,
        soft_since: datetime,
        dry_run: bool = False,
    ) -> RecordedBounce | None:
        """Keep a bounce of ``kind`` on its delivery row and suppress as it demands.

        The row keeps its most severe bounce (see :data:`BOUNCE_KINDS`); a bounce no
        worse than the one recorded changes nothing there. A hard bounce or a complaint
        suppresses the address for every newsletter; a soft bounce does once the address
        has ``soft_limit`` deliveries with a soft bounce since ``soft_since``. Idempotent:
        recording the same bounce again adds nothing. None when there is no such row.
        With ``dry_run`` everything is done and then rolled back, so the answer is the
        one a real run would give.
        """
        if kind not in BOUNCE_KINDS:
            raise ValueError(f"unknown bounce kind {kind!r} (known: {', '.join(BOUNCE_KINDS)})")
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                row = conn.execute(
                    select(t.deliveries.c.subscriber_id, t.deliveries.c.bounce).where(
                        t.deliveries.c.id == delivery_id
                    )
                ).first()
                if row is None:
                    return None
                worse = row.bounce is None or (
                    BOUNCE_KINDS.index(kind) > BOUNCE_KINDS.index(row.bounce)
                    if row.bounce in BOUNCE_KINDS
                    else True
                )
                if worse:
                    conn.execute(
                        update(t.deliveries)
                        .where(t.deliveries.c.id == delivery_id)
                        .values(
                            bounce=kind,
                            bounce_status=status,
                            bounce_diagnostic=diagnostic[:2000] if diagnostic else None,
                            bounced_at=now,
                        )
                    )
                reason = _SUPPRESSES.get(kind)
                soft_count = 0
                if kind == "soft":
                    soft_count = int(
                        conn.execute(
                            select(func.count()).where(
                                t.deliveries.c.subscriber_id == row.subscriber_id,
                                t.deliveries.c.bounce == "soft",
                                t.deliveries.c.bounced_at >= soft_since,
                            )
                        ).scalar_one()
                    )
                    if soft_count >= soft_limit:
                        reason = "soft_bounce"
                suppressed = None
                key = conn.execute(
                    select(t.subscribers.c.email_key).where(t.subscribers.c.id == row.subscriber_id)
                ).scalar()
                # An erased subscriber has no key left and is suppressed already.
                if reason and key is not None:
                    if suppress_in(conn, self.address_hash(key), reason, None, now):
                        suppressed = reason
                    leave_active(conn, key, reason, now)
            except BaseException:
                transaction.rollback()
                raise
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
        return RecordedBounce(worse, suppressed, soft_count)
