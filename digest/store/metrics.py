"""Read-only questions an operator's monitoring asks the store: does it answer, and how
many rows of each kind are where.

Computed afresh on each call, so every process serving them gives the same answer. The
web app's readiness probe and its Prometheus metrics (digest.web.metrics) ask these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from digest.store import schema as t

__all__ = ["StoreCounts", "store_answers", "store_counts"]


def store_answers(engine: Engine) -> str | None:
    """None if the database answers a ``SELECT 1``; else why not (the error's class name,
    never its text, which may carry the URL)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return type(getattr(exc, "orig", None) or exc).__name__
    return None


@dataclass(frozen=True)
class StoreCounts:
    """What the store holds, as counts per label tuple."""

    #: (newsletter, issue key, state) -> deliveries
    deliveries: dict[tuple[str, str, str], int]
    #: status -> subscribers (merged duplicates left out)
    subscribers: dict[str, int]
    #: (newsletter, bounce kind) -> deliveries whose most severe bounce is of that kind
    bounces: dict[tuple[str, str], int]
    #: (newsletter, kind) -> queued mail not yet sent and not given up
    queued_mail: dict[tuple[str, str], int]
    #: (newsletter, kind) -> queued mail given up after its retries
    given_up_mail: dict[tuple[str, str], int]
    #: (newsletter, source) -> (time of the last collect, whether it failed)
    collects: dict[tuple[str, str], tuple[datetime, bool]]


def store_counts(engine: Engine) -> StoreCounts:
    """Every count of :class:`StoreCounts`, read on one connection."""
    with engine.connect() as conn:
        return StoreCounts(
            deliveries=_deliveries(conn),
            subscribers=_grouped(
                conn,
                select(t.subscribers.c.status, func.count())
                .where(t.subscribers.c.status != "merged")
                .group_by(t.subscribers.c.status),
            ),
            bounces=_grouped(
                conn,
                select(t.issues.c.newsletter, t.deliveries.c.bounce, func.count())
                .join(t.issues, t.issues.c.id == t.deliveries.c.issue_id)
                .where(t.deliveries.c.bounce.is_not(None))
                .group_by(t.issues.c.newsletter, t.deliveries.c.bounce),
            ),
            queued_mail=_mail(conn, given_up=False),
            given_up_mail=_mail(conn, given_up=True),
            collects={
                (row.newsletter, row.name): (row.fetched_at, row.last_error is not None)
                for row in conn.execute(
                    select(
                        t.sources.c.newsletter,
                        t.sources.c.name,
                        t.sources.c.fetched_at,
                        t.sources.c.last_error,
                    ).where(t.sources.c.fetched_at.is_not(None))
                )
            },
        )


def _grouped(conn: Connection, query: Select[Any]) -> dict[Any, int]:
    """``{labels: count}`` of a query whose last column is the count (one label: bare)."""
    result: dict[Any, int] = {}
    for row in conn.execute(query):
        *labels, count = row
        result[labels[0] if len(labels) == 1 else tuple(labels)] = int(count)
    return result


def _deliveries(conn: Connection) -> dict[tuple[str, str, str], int]:
    query = (
        select(t.issues.c.newsletter, t.issues.c.key, t.deliveries.c.state, func.count())
        .join(t.issues, t.issues.c.id == t.deliveries.c.issue_id)
        .group_by(t.issues.c.newsletter, t.issues.c.key, t.deliveries.c.state)
    )
    return _grouped(conn, query)


def _mail(conn: Connection, *, given_up: bool) -> dict[tuple[str, str], int]:
    q = t.mail_queue.c
    query = (
        select(q.newsletter, q.kind, func.count())
        .where(q.sent_at.is_(None))
        .where(q.given_up_at.is_not(None) if given_up else q.given_up_at.is_(None))
        .group_by(q.newsletter, q.kind)
    )
    return _grouped(conn, query)
