"""Who holds which ledger rows: sender processes registered with a heartbeat.

Every process that claims ledger rows (a ``digest send``, each of its helpers, each
retry pass of ``digest run``) registers in ``senders`` (host, pid, started_at,
heartbeat_at), names itself on every row it claims (``deliveries.claimed_by``) and
writes its heartbeat every :data:`HEARTBEAT_SECONDS`. A row in 'sending' changes hands
only when its sender is gone: its heartbeat older than :data:`STALE_SECONDS`, its
registration deleted, or (on the same host) its process no longer running. A sender
that is alive keeps its rows however slowly it sends them.

Heartbeats are written with the sender's own clock and compared with the claiming
sender's: machines that share one PostgreSQL store must keep their clocks in step
(NTP) to well within :data:`STALE_SECONDS`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update

from digest.core.models import DeliveryState
from digest.store import schema as t
from digest.store.sql import utc_now

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALE_SECONDS",
    "Holder",
    "SenderStore",
    "held_by_gone_sender",
]

#: A registered sender writes its heartbeat this often.
HEARTBEAT_SECONDS = 2.0
#: A sender whose heartbeat is older than this is gone: its rows may be taken over.
STALE_SECONDS = 15.0


@dataclass(frozen=True)
class Holder:
    """A sender holding rows of an issue in 'sending'; host, pid and heartbeat are None
    for one whose registration is gone (its rows are taken over by the next claim)."""

    rows: int
    host: str | None = None
    pid: int | None = None
    heartbeat_at: datetime | None = None


def stale_before(now: datetime | None = None) -> datetime:
    """Heartbeats older than this are stale."""
    return (now or utc_now()) - timedelta(seconds=STALE_SECONDS)


def held_by_gone_sender(heartbeat_before: datetime) -> ColumnElement[bool]:
    """SQL condition on a delivery row: no live sender holds it.

    Its sender's registration is gone or its heartbeat older than ``heartbeat_before``;
    a row claimed without a name (before senders registered) counts as held by a gone
    sender once the row itself is older than that.
    """
    d, s = t.deliveries.c, t.senders.c
    alive = select(s.id).where(s.id == d.claimed_by, s.heartbeat_at >= heartbeat_before).exists()
    return or_(
        and_(d.claimed_by.is_(None), d.updated_at < heartbeat_before),
        and_(d.claimed_by.is_not(None), ~alive),
    )


def _running(pid: int) -> bool:
    """True when a process ``pid`` runs on this host (or cannot be told apart from one).

    A zombie has ended: a helper killed with its parent stays one until whoever adopted
    it reaps it, which in a container may be never.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and waits to be reaped (Linux; False where unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows
    # the last ")".
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] in ("Z", "X")


class SenderStore:
    """Registering senders and their heartbeats on the store's engine."""

    engine: Engine

    def register_sender(self, now: datetime | None = None) -> int:
        """Register this process as a sender; returns its id (for ``claimed_by``).

        Senders of this host whose process has ended are forgotten first, and so are
        stale ones anywhere: the rows they held can be taken over at once.
        """
        now = now or utc_now()
        self.forget_gone_senders(now)
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(t.senders)
                    .values(host=socket.gethostname(), pid=os.getpid(), started_at=now,
                            heartbeat_at=now)
                    .returning(t.senders.c.id)
                ).scalar_one()
            )  # fmt: skip

    def beat(self, sender: int, now: datetime | None = None) -> bool:
        """Write ``sender``'s heartbeat; False when its registration is gone (it was
        taken for a dead sender and its rows may have changed hands)."""
        with self.engine.begin() as conn:
            found = conn.execute(
                update(t.senders)
                .where(t.senders.c.id == sender)
                .values(heartbeat_at=now or utc_now())
            ).rowcount
        return bool(found)

    def unregister_sender(self, sender: int) -> None:
        """Forget ``sender`` (it holds no row any more, or ends)."""
        with self.engine.begin() as conn:
            conn.execute(delete(t.senders).where(t.senders.c.id == sender))

    def forget_gone_senders(self, now: datetime | None = None) -> int:
        """Delete stale senders and those of this host whose process has ended."""
        s = t.senders.c
        host, me = socket.gethostname(), os.getpid()
        with self.engine.begin() as conn:
            local = conn.execute(select(s.id, s.pid).where(s.host == host, s.pid != me)).all()
            ended = [sid for sid, pid in local if not _running(pid)]
            gone = or_(s.heartbeat_at < stale_before(now), s.id.in_(ended))
            return int(conn.execute(delete(t.senders).where(gone)).rowcount or 0)

    def live_senders(self, now: datetime | None = None) -> set[int]:
        """The ids of the senders whose heartbeat is fresh."""
        s = t.senders.c
        with self.engine.connect() as conn:
            return set(
                conn.execute(select(s.id).where(s.heartbeat_at >= stale_before(now))).scalars()
            )

    def next_takeover(
        self, issue_id: int, sender: int, now: datetime | None = None
    ) -> datetime | None:
        """When rows of the issue held by a silent sender can be taken over, or None.

        Silent: no heartbeat for twice its interval (it may have died on another host,
        where its process cannot be looked up). A row of a sender that keeps beating is
        left to it; None when no such row is left.
        """
        now = now or utc_now()
        d, s = t.deliveries.c, t.senders.c
        silent_since = now - timedelta(seconds=2 * HEARTBEAT_SECONDS)
        with self.engine.connect() as conn:
            last = conn.execute(
                select(func.max(s.heartbeat_at)).where(
                    s.heartbeat_at < silent_since,
                    s.id != sender,
                    select(d.id)
                    .where(
                        d.issue_id == issue_id,
                        d.state == DeliveryState.SENDING,
                        d.claimed_by == s.id,
                    )
                    .exists(),
                )
            ).scalar()
        if last is None:
            return None
        return last + timedelta(seconds=STALE_SECONDS)

    def holders(self, issue_id: int) -> list[Holder]:
        """Who holds the issue's rows in 'sending' now, most rows first."""
        d, s = t.deliveries.c, t.senders.c
        rows = func.count().label("rows")
        with self.engine.connect() as conn:
            found = conn.execute(
                select(rows, s.host, s.pid, s.heartbeat_at)
                .select_from(t.deliveries.outerjoin(t.senders, s.id == d.claimed_by))
                .where(d.issue_id == issue_id, d.state == DeliveryState.SENDING)
                .group_by(s.id, s.host, s.pid, s.heartbeat_at)
                .order_by(rows.desc())
            ).all()
        return [Holder(int(r.rows), r.host, r.pid, r.heartbeat_at) for r in found]
