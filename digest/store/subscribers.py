"""Subscribers: saving, importing, listing and looking them up, and unsubscribing.

The part of :class:`~digest.store.Store` that writes the subscribers and their list
memberships; choosing who an issue goes to is the ledger's (digest.store.ledger).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from digest.core.addresses import email_key
from digest.core.errors import StoreError
from digest.core.models import Subscriber
from digest.store import schema as t
from digest.store.importing import ImportCounts, forget_seen, import_rows
from digest.store.privacy import KEY_CHECK_SCOPE
from digest.store.sql import (
    insert_all_ignoring_duplicates,
    transaction,
    utc_now,
)

__all__ = ["IMPORT_ATTEMPTS", "SubscriberStore", "subscriber_from_row"]

#: Times an import is done again when another one added the same address meanwhile.
IMPORT_ATTEMPTS = 3


class SubscriberStore:
    """Subscribers and their lists on the store's engine."""

    engine: Engine
    address_hash: Callable[[str], str]  # PrivacyStore's

    def save_subscriber(
        self, subscriber: Subscriber, lists: Iterable[str], now: datetime | None = None
    ) -> int:
        """Insert or update a subscriber by email and add them to ``lists``; returns the id."""
        with self.engine.begin() as conn:
            sid, _added = _save_subscriber(conn, subscriber, set(lists), now or utc_now())
        return sid

    def save_subscribers(
        self, subscribers: Iterable[Subscriber], lists: Iterable[str], now: datetime | None = None
    ) -> tuple[int, int]:
        """Insert or update many subscribers in one transaction; returns (added, updated)."""
        now, names = now or utc_now(), set(lists)
        added = updated = 0
        with self.engine.begin() as conn:
            for subscriber in subscribers:
                _sid, is_new = _save_subscriber(conn, subscriber, names, now)
                added += is_new
                updated += not is_new
        return added, updated

    def import_subscribers(
        self,
        rows: Iterable[tuple[int, Subscriber]],
        list_name: str,
        *,
        consent: str,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> ImportCounts:
        """Import (line, subscriber) rows into ``list_name`` as one transaction.

        See :func:`digest.store.importing.import_rows`: ``rows`` may be a stream, read
        a chunk at a time. With ``dry_run`` the same work is done and rolled back, so the
        counts are exactly what the import would give.
        When another import or a sign-up adds one of the addresses meanwhile, the
        transaction is rolled back and, for rows that can be read again (a sequence),
        done again from what the store then holds; a StoreError says so if that keeps
        happening, or at once for a stream, which cannot be read twice.
        """
        attempts = IMPORT_ATTEMPTS if isinstance(rows, Sequence) else 1
        for _attempt in range(attempts):
            try:
                return self._import_once(rows, list_name, consent, dry_run, now)
            except IntegrityError:
                continue  # rolled back: look the addresses up again
            except OperationalError as exc:
                if "database is locked" not in str(exc):
                    raise
                raise StoreError(
                    "another import or a sign-up kept the SQLite store busy for longer than "
                    "it waits; nothing of this import was written, run it again"
                ) from None
        raise StoreError(
            "another import or a sign-up added some of these addresses at the same moment"
            + (f" ({attempts} tries)" if attempts > 1 else "")
            + "; nothing of this import was written, run it again"
        )

    def _import_once(
        self,
        rows: Iterable[tuple[int, Subscriber]],
        list_name: str,
        consent: str,
        dry_run: bool,
        now: datetime | None,
    ) -> ImportCounts:
        with self.engine.connect() as conn:
            pending = conn.begin()
            try:
                counts = import_rows(
                    conn, rows, list_name, consent=consent, hash_of=self.address_hash,
                    now=now or utc_now(),
                )  # fmt: skip
            except BaseException:
                pending.rollback()
                with contextlib.suppress(SQLAlchemyError):
                    forget_seen(conn)
                raise
            if dry_run:
                pending.rollback()
            else:
                pending.commit()
            forget_seen(conn)
        return counts

    def subscriber_rows(
        self, *, list_name: str | None = None, status: str | None = None
    ) -> list[tuple[Subscriber, str]]:
        """Subscribers (on ``list_name``, with ``status``) and their status, by address.

        Tombstones of merged spellings are left out.
        """
        query = select(t.subscribers).where(t.subscribers.c.status != "merged")
        if list_name is not None:
            query = query.where(
                t.subscribers.c.id.in_(
                    select(t.memberships.c.subscriber_id).where(
                        t.memberships.c.list_name == list_name
                    )
                )
            )
        if status is not None:
            query = query.where(t.subscribers.c.status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.subscribers.c.email_key, t.subscribers.c.id)).all()
            member_of: dict[int, set[str]] = {}
            for sid, name in conn.execute(
                select(t.memberships.c.subscriber_id, t.memberships.c.list_name)
            ):
                member_of.setdefault(sid, set()).add(name)
        return [(subscriber_from_row(r, member_of.get(r.id, set())), r.status) for r in rows]

    def status_counts(self, *, list_name: str | None = None) -> dict[str, int]:
        """How many subscribers (on ``list_name``) have each status; merged left out."""
        query = (
            select(t.subscribers.c.status, func.count())
            .where(t.subscribers.c.status != "merged")
            .group_by(t.subscribers.c.status)
        )
        if list_name is not None:
            query = query.where(
                t.subscribers.c.id.in_(
                    select(t.memberships.c.subscriber_id).where(
                        t.memberships.c.list_name == list_name
                    )
                )
            )
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query).all()}

    def withdrawals(self, subscribers: Sequence[Subscriber]) -> dict[int, set[str]]:
        """The newsletters each of ``subscribers`` has left, by id: unsubscribed from
        (one click, the preferences, a mail) or suppressed for that newsletter alone."""
        ids = {s.id for s in subscribers if s.id is not None}
        left: dict[int, set[str]] = {}
        u, p = t.unsubscriptions.c, t.suppressions.c
        with self.engine.connect() as conn:
            for sid, newsletter in conn.execute(select(u.subscriber_id, u.newsletter)):
                if sid in ids:
                    left.setdefault(sid, set()).add(newsletter)
            scoped: dict[str, set[str]] = {}
            for digest_of, scope in conn.execute(
                select(p.address_hash, p.scope).where(
                    p.scope.not_in([t.ALL_NEWSLETTERS, KEY_CHECK_SCOPE])
                )
            ):
                scoped.setdefault(digest_of, set()).add(scope)
        if scoped:
            for subscriber in subscribers:
                if subscriber.id is not None and subscriber.email:
                    found = scoped.get(self.address_hash(subscriber.email))
                    if found:
                        left.setdefault(subscriber.id, set()).update(found)
        return left

    def subscriber_by_email(self, email: str) -> Subscriber | None:
        """The subscriber with this address in any spelling (case, IDNA), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.subscribers).where(t.subscribers.c.email_key == email_key(email))
            ).first()
            if row is None:
                return None
            lists = set(
                conn.execute(
                    select(t.memberships.c.list_name).where(t.memberships.c.subscriber_id == row.id)
                ).scalars()
            )
        return subscriber_from_row(row, lists)

    def unsubscribe(
        self,
        subscriber_id: int,
        newsletter: str,
        now: datetime | None = None,
        *,
        connection: Connection | None = None,
    ) -> str | None:
        """Withdraw a subscriber from one newsletter (idempotent); their email, or None.

        An id merged into another subscriber (same address in another spelling, see
        migration 0003) withdraws that subscriber: links already sent keep working. The
        address goes on the suppression list for the newsletter; an erased id does
        nothing (the address is suppressed for every newsletter already). With
        ``connection`` it is done in the caller's transaction.
        """
        return self.unsubscribe_many([(subscriber_id, newsletter)], now, connection=connection)[0]

    def unsubscribe_many(
        self,
        withdrawals: Sequence[tuple[int, str]],
        now: datetime | None = None,
        *,
        connection: Connection | None = None,
    ) -> list[str | None]:
        """:meth:`unsubscribe` for each ``(subscriber_id, newsletter)`` in one transaction,
        a statement for all of them at each step: one commit (one flush to disk) for a
        burst of one-click unsubscribes. The email of each, or None."""
        now = now or utc_now()
        with transaction(self.engine, connection) as conn:
            return _unsubscribe_in(conn, self.address_hash, withdrawals, now)

    def unsubscribed(self, subscriber_id: int, newsletter: str) -> bool:
        with self.engine.connect() as conn:
            subscriber_id = _live_id(conn, subscriber_id)
            found = conn.execute(
                select(t.unsubscriptions.c.subscriber_id).where(
                    t.unsubscriptions.c.subscriber_id == subscriber_id,
                    t.unsubscriptions.c.newsletter == newsletter,
                )
            ).first()
        return found is not None


def _save_subscriber(
    conn: Connection, subscriber: Subscriber, lists: set[str], now: datetime
) -> tuple[int, bool]:
    """Upsert one subscriber by email key and add the missing list memberships.

    An existing subscriber keeps the spelling of the address first given; the other
    fields take the new values.
    """
    key = email_key(subscriber.email)
    values = {
        "name": subscriber.name,
        "locale": subscriber.locale,
        "categories": sorted(subscriber.categories),
        "regions": sorted(subscriber.regions),
        "updated_at": now,
    }
    sid = conn.execute(select(t.subscribers.c.id).where(t.subscribers.c.email_key == key)).scalar()
    is_new = sid is None
    if sid is None:
        sid = conn.execute(
            t.subscribers.insert()
            .values(
                email=subscriber.email, email_key=key, status="active", created_at=now, **values
            )
            .returning(t.subscribers.c.id)
        ).scalar_one()
    else:
        conn.execute(t.subscribers.update().where(t.subscribers.c.id == sid).values(values))
    have = set(
        conn.execute(
            select(t.memberships.c.list_name).where(t.memberships.c.subscriber_id == sid)
        ).scalars()
    )
    for name in sorted(lists - have):
        conn.execute(
            t.memberships.insert().values(subscriber_id=sid, list_name=name, created_at=now)
        )
    return int(sid), is_new


def _unsubscribe_in(
    conn: Connection,
    hash_of: Callable[[str], str],
    withdrawals: Sequence[tuple[int, str]],
    now: datetime,
) -> list[str | None]:
    """Each withdrawal as :meth:`SubscriberStore.unsubscribe` makes it, in ``conn``: four
    statements whatever their number."""
    c = t.subscribers.c
    asked = {subscriber_id for subscriber_id, _ in withdrawals}
    # An id merged into another subscriber withdraws that one (see _live_id).
    merged = {
        int(i): int(into)
        for i, into in conn.execute(
            select(c.id, c.merged_into).where(c.id.in_(asked), c.merged_into.is_not(None))
        )
    }
    live = {i: merged.get(i, i) for i in asked}
    emails: dict[int, str] = {
        int(i): email
        for i, email in conn.execute(
            select(c.id, c.email).where(c.id.in_(set(live.values())), c.status != "erased")
        )
    }
    suppressions: list[dict[str, Any]] = []
    unsubscriptions: list[dict[str, Any]] = []
    found: list[str | None] = []
    for subscriber_id, newsletter in withdrawals:
        email = emails.get(live[subscriber_id])
        found.append(email)
        if email is not None:
            # The suppression outlives the subscriber (an erasure, a re-import).
            suppressions.append(
                {"address_hash": hash_of(email), "scope": newsletter,
                 "reason": "unsubscribed", "created_at": now}
            )  # fmt: skip
            unsubscriptions.append(
                {"subscriber_id": live[subscriber_id], "newsletter": newsletter, "created_at": now}
            )
    insert_all_ignoring_duplicates(conn, t.suppressions, suppressions)
    insert_all_ignoring_duplicates(conn, t.unsubscriptions, unsubscriptions)
    return found


def _live_id(conn: Connection, subscriber_id: int) -> int:
    """The id itself, or for a merged duplicate the id of the subscriber it became."""
    merged_into = conn.execute(
        select(t.subscribers.c.merged_into).where(t.subscribers.c.id == subscriber_id)
    ).scalar()
    return int(merged_into) if merged_into is not None else subscriber_id


def subscriber_from_row(row: Any, lists: set[str]) -> Subscriber:
    return Subscriber(
        email=row.email,
        name=row.name,
        lists=frozenset(lists),
        categories=frozenset(row.categories or ()),
        regions=frozenset(row.regions or ()),
        locale=row.locale,
        id=row.id,
    )
