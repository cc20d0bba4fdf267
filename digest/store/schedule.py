"""The marks of the cluster's schedule, and what its tick asks of the store.

Mixed into :class:`~digest.store.Store`. A job's mark holds its last due time handled
and the time up to which its due times have been handled (see digest.cluster.tick).
:meth:`ScheduleStore.schedule_mark` holds the mark's row locked for one transaction,
in which the tick queues the jobs that fell due and advances the mark: a second tick
waits for the first to commit and then finds nothing left to queue.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from digest.store import schema as t
from digest.store.signups import mail_due_at
from digest.store.sql import insert_ignoring_duplicates

__all__ = ["ScheduleMark", "ScheduleStore"]


def _later(stored: datetime | None, new: datetime) -> datetime:
    return new if stored is None or new > stored else stored


@dataclass
class ScheduleMark:
    """One job's mark, locked: its last due time handled and the time up to which its
    due times are handled (both None before its first tick), and the connection whose
    transaction holds the lock (queue the job's jobs on it)."""

    name: str
    due_at: datetime | None
    ticked_at: datetime | None
    connection: Connection

    def advance(self, *, due_at: datetime | None = None, ticked_at: datetime | None = None) -> None:
        """Move the mark on. It never moves back: a ticker whose clock is behind
        another's must not hand out a due time again."""
        if due_at is not None:
            self.due_at = _later(self.due_at, due_at)
        if ticked_at is not None:
            self.ticked_at = _later(self.ticked_at, ticked_at)


class ScheduleStore:
    """The schedule's marks on the store's engine."""

    engine: Engine

    @contextlib.contextmanager
    def schedule_mark(self, name: str) -> Iterator[ScheduleMark]:
        """The mark of job ``name``, its row locked until the ``with`` block ends.

        The row is created (empty) if it is missing. When the block ends without an
        error, the mark as the block advanced it is written and the transaction commits
        with whatever the block wrote on ``mark.connection``; an error rolls all of it back.
        """
        c = t.schedule_marks.c
        with self.engine.begin() as conn:
            # On PostgreSQL a concurrent insert of the same name waits for the first to
            # commit; the locking read then sees the committed row, as advanced.
            insert_ignoring_duplicates(conn, t.schedule_marks, [{"name": name}])
            row = conn.execute(
                select(c.due_at, c.ticked_at).where(c.name == name).with_for_update()
            ).one()
            mark = ScheduleMark(name, row.due_at, row.ticked_at, conn)
            yield mark
            if (mark.due_at, mark.ticked_at) != (row.due_at, row.ticked_at):
                conn.execute(
                    update(t.schedule_marks)
                    .where(c.name == name)
                    .values(due_at=mark.due_at, ticked_at=mark.ticked_at)
                )

    def schedule_marks(self) -> dict[str, tuple[datetime | None, datetime | None]]:
        """Every job's mark by name: (last due time handled, handled up to)."""
        c = t.schedule_marks.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(c.name, c.due_at, c.ticked_at)).all()
        return {row.name: (row.due_at, row.ticked_at) for row in rows}

    def mail_due(self, now: datetime) -> bool:
        """Whether a queued mail is due at ``now`` (as ``claim_mail`` would take one)."""
        due = select(t.mail_queue.c.id).where(mail_due_at(now)).exists()
        with self.engine.connect() as conn:
            return bool(conn.execute(select(due)).scalar_one())
