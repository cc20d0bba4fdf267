"""Sign-ups waiting for their double opt-in, the mail queue, and the reader's own changes.

Mixed into :class:`~digest.store.Store`. A sign-up is not a subscriber: until the
reader confirms it, the address is only in ``signups`` and gets nothing but the
confirmation mail. Confirming creates (or updates) the subscriber, joins the list,
copies the proof into ``consents`` and lifts a suppression of the address, all in one
transaction, once per sign-up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from digest.core.addresses import email_key
from digest.core.models import Subscriber
from digest.store import schema as t
from digest.store.privacy import lift_in
from digest.store.sql import insert_ignoring_duplicates, transaction, upsert_where, utc_now

__all__ = ["CONFIRM", "NewSignup", "QueuedMail", "Signup", "SignupStore", "mail_due_at"]

#: ``mail_queue.kind`` of a confirmation request.
CONFIRM = "confirm"

#: Picks a subscriber's interests from their current ones (None for a new subscriber).
Interests = Callable[[frozenset[str] | None, frozenset[str] | None], tuple[set[str], set[str]]]


def mail_due_at(now: datetime) -> ColumnElement[bool]:
    """SQL condition on ``mail_queue``: the row is due at ``now`` and nobody holds it."""
    q = t.mail_queue.c
    return and_(
        q.sent_at.is_(None),
        q.given_up_at.is_(None),
        q.next_attempt_at <= now,
        or_(q.lease_until.is_(None), q.lease_until < now),
    )


@dataclass(frozen=True)
class NewSignup:
    """What the sign-up page received, with the proof of consent."""

    newsletter: str
    email: str
    name: str
    categories: frozenset[str]
    regions: frozenset[str]
    statement: str
    text_version: str | None
    locale: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None


@dataclass(frozen=True)
class Signup:
    """A stored sign-up."""

    id: int
    newsletter: str
    email: str
    name: str
    categories: frozenset[str]
    regions: frozenset[str]
    locale: str | None
    created_at: datetime
    confirmed_at: datetime | None
    subscriber_id: int | None
    consent_id: int | None


@dataclass(frozen=True)
class QueuedMail:
    """One claimed row of the mail queue."""

    id: int
    request_id: str
    kind: str
    newsletter: str
    signup_id: int | None
    attempts: int
    created_at: datetime


class SignupStore:
    """Sign-ups, their confirmation, the mail queue and the preference centre's writes."""

    engine: Engine
    address_hash: Callable[[str], str]  # PrivacyStore's

    # --- sign-ups ------------------------------------------------------------------------

    def add_signup(
        self,
        signup: NewSignup,
        *,
        interval: timedelta,
        now: datetime | None = None,
        connection: Connection | None = None,
    ) -> int | None:
        """Store a sign-up and queue its confirmation mail, in one transaction (with
        ``connection``: the caller's, so both are stored only if it commits).

        None (and nothing stored) when a confirmation of this newsletter was queued for
        the address (in any spelling) less than ``interval`` ago: at most one mail per
        address and interval, also when sign-ups for it arrive at the same moment.
        """
        now = now or utc_now()
        key = email_key(signup.email)
        limits = t.confirm_limits
        with transaction(self.engine, connection) as conn:
            # The write comes first: it takes the row (and on SQLite the write lock) before
            # anything is read, so of concurrent sign-ups exactly one gets the slot.
            if not upsert_where(
                conn,
                limits,
                {
                    "newsletter": signup.newsletter,
                    "address_hash": self.address_hash(signup.email),
                    "queued_at": now,
                },
                limits.c.queued_at <= now - interval,
            ):
                return None
            signup_id = conn.execute(
                t.signups.insert()
                .values(
                    newsletter=signup.newsletter,
                    email=signup.email,
                    email_key=key,
                    name=signup.name,
                    categories=sorted(signup.categories),
                    regions=sorted(signup.regions),
                    locale=signup.locale,
                    statement=signup.statement,
                    text_version=signup.text_version,
                    created_at=now,
                    ip=signup.ip,
                    user_agent=signup.user_agent,
                    page_url=signup.page_url,
                )
                .returning(t.signups.c.id)
            ).scalar_one()
            conn.execute(
                t.mail_queue.insert().values(
                    request_id=uuid.uuid4().hex,
                    kind=CONFIRM,
                    newsletter=signup.newsletter,
                    recipient_key=key,
                    signup_id=signup_id,
                    created_at=now,
                    attempts=0,
                    next_attempt_at=now,
                )
            )
        return int(signup_id)

    def signup(self, signup_id: int) -> Signup | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.signups).where(t.signups.c.id == signup_id)).first()
        return None if row is None else _signup(row)

    def confirm_signup(
        self,
        signup_id: int,
        *,
        join_list: str,
        interests: Interests,
        ip: str | None,
        now: datetime | None = None,
    ) -> tuple[Signup, bool] | None:
        """Confirm a sign-up once: subscriber, membership, proof of consent, and the
        suppression of the address for its newsletter (and every newsletter) lifted.

        Returns the sign-up and whether this call confirmed it; None for a sign-up that
        does not exist (any more). A token is good for one confirmation: a sign-up
        confirmed before changes nothing, so replaying its link cannot undo a later
        withdrawal (the lift happens in the same transaction as the confirmation). When
        an import adds the address at the same moment, the confirmation is done again
        and finds that subscriber.
        """
        now = now or utc_now()
        try:
            return self._confirm_once(signup_id, join_list, interests, ip, now)
        except IntegrityError:  # rolled back: the address is there now
            return self._confirm_once(signup_id, join_list, interests, ip, now)

    def _confirm_once(
        self,
        signup_id: int,
        join_list: str,
        interests: Interests,
        ip: str | None,
        now: datetime,
    ) -> tuple[Signup, bool] | None:
        with self.engine.begin() as conn:
            # Only the request that sets confirmed_at goes on; a concurrent one waits or
            # finds it set.
            claimed = conn.execute(
                update(t.signups)
                .where(t.signups.c.id == signup_id, t.signups.c.confirmed_at.is_(None))
                .values(confirmed_at=now)
            ).rowcount
            row = conn.execute(select(t.signups).where(t.signups.c.id == signup_id)).first()
            if row is None:
                return None
            if not claimed:
                return _signup(row), False
            sid = _subscriber_for(conn, row, interests, now)
            insert_ignoring_duplicates(
                conn,
                t.memberships,
                [{"subscriber_id": sid, "list_name": join_list, "created_at": now}],
            )
            consent_id = conn.execute(
                t.consents.insert()
                .values(
                    subscriber_id=sid,
                    newsletter=row.newsletter,
                    list_name=join_list,
                    source="signup",
                    statement=row.statement,
                    text_version=row.text_version,
                    created_at=row.created_at,
                    ip=row.ip,
                    user_agent=row.user_agent,
                    page_url=row.page_url,
                    confirmed_at=now,
                    confirm_ip=ip,
                )
                .returning(t.consents.c.id)
            ).scalar_one()
            conn.execute(
                update(t.signups)
                .where(t.signups.c.id == signup_id)
                .values(subscriber_id=sid, consent_id=consent_id)
            )
            lift_in(conn, self.address_hash(row.email), sid, row.newsletter)
            row = conn.execute(select(t.signups).where(t.signups.c.id == signup_id)).one()
        return _signup(row), True

    def purge_signups(self, newsletter: str, older_than: datetime) -> int:
        """Delete the sign-ups of ``newsletter`` made before ``older_than`` (their links
        have expired); a confirmed one's proof stays in ``consents``."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(t.confirm_limits).where(
                    t.confirm_limits.c.newsletter == newsletter,
                    t.confirm_limits.c.queued_at < older_than,
                )
            )
            return int(
                conn.execute(
                    delete(t.signups).where(
                        t.signups.c.newsletter == newsletter,
                        t.signups.c.created_at < older_than,
                    )
                ).rowcount
            )

    # --- mail queue ----------------------------------------------------------------------

    def claim_mail(self, *, lease: timedelta, now: datetime | None = None) -> QueuedMail | None:
        """Take the next due mail for ``lease``; None when nothing is due.

        A claim that runs out (the process died while sending) makes the row due again.
        """
        now = now or utc_now()
        due = mail_due_at(now)
        with self.engine.begin() as conn:
            for row in conn.execute(
                select(t.mail_queue).where(due).order_by(t.mail_queue.c.next_attempt_at).limit(5)
            ):
                taken = conn.execute(
                    update(t.mail_queue)
                    .where(t.mail_queue.c.id == row.id, due)
                    .values(lease_until=now + lease, attempts=t.mail_queue.c.attempts + 1)
                ).rowcount
                if taken:
                    return QueuedMail(
                        row.id,
                        row.request_id,
                        row.kind,
                        row.newsletter,
                        row.signup_id,
                        row.attempts + 1,
                        row.created_at,
                    )
        return None

    def mail_sent(self, mail_id: int, now: datetime | None = None) -> None:
        self._finish_mail(mail_id, sent_at=now or utc_now(), last_error=None)

    def mail_failed(self, mail_id: int, error: str, *, retry_at: datetime | None) -> None:
        """Record a failed attempt; retry at ``retry_at``, or never when it is None."""
        values: dict[str, Any] = {"last_error": error[:2000]}
        if retry_at is None:
            values["given_up_at"] = utc_now()
        else:
            values["next_attempt_at"] = retry_at
        self._finish_mail(mail_id, **values)

    def _finish_mail(self, mail_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.mail_queue)
                .where(t.mail_queue.c.id == mail_id)
                .values(lease_until=None, **values)
            )

    def queued_mail(self) -> list[dict[str, Any]]:
        """Every row of the mail queue, oldest first (for tests and the operator)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.mail_queue).order_by(t.mail_queue.c.id)).all()
        return [dict(row._mapping) for row in rows]

    # --- the preference centre -----------------------------------------------------------

    def subscriber_by_id(self, subscriber_id: int) -> tuple[Subscriber, str] | None:
        """A subscriber and their status by id (a merged id: its survivor); None for an
        unknown or erased one."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.subscribers).where(t.subscribers.c.id == subscriber_id)
            ).first()
            if row is not None and row.merged_into is not None:
                row = conn.execute(
                    select(t.subscribers).where(t.subscribers.c.id == row.merged_into)
                ).first()
            if row is None or row.status in ("erased", "merged") or row.email_key is None:
                return None
            lists = conn.execute(
                select(t.memberships.c.list_name).where(t.memberships.c.subscriber_id == row.id)
            ).scalars()
            subscriber = Subscriber(
                email=row.email,
                name=row.name,
                lists=frozenset(lists),
                categories=frozenset(row.categories or ()),
                regions=frozenset(row.regions or ()),
                locale=row.locale,
                id=row.id,
            )
        return subscriber, str(row.status)

    def join_list(self, subscriber_id: int, list_name: str, now: datetime | None = None) -> None:
        """Add a subscriber to a list (idempotent)."""
        with self.engine.begin() as conn:
            insert_ignoring_duplicates(
                conn,
                t.memberships,
                [
                    {
                        "subscriber_id": subscriber_id,
                        "list_name": list_name,
                        "created_at": now or utc_now(),
                    }
                ],
            )

    def set_interests(
        self,
        subscriber_id: int,
        *,
        name: str,
        categories: Iterable[str],
        regions: Iterable[str],
        now: datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.subscribers)
                .where(t.subscribers.c.id == subscriber_id, t.subscribers.c.status != "erased")
                .values(
                    name=name,
                    categories=sorted(categories),
                    regions=sorted(regions),
                    updated_at=now or utc_now(),
                )
            )


def _signup(row: Any) -> Signup:
    return Signup(
        id=row.id,
        newsletter=row.newsletter,
        email=row.email,
        name=row.name,
        categories=frozenset(row.categories or ()),
        regions=frozenset(row.regions or ()),
        locale=row.locale,
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        subscriber_id=row.subscriber_id,
        consent_id=row.consent_id,
    )


def _subscriber_for(conn: Connection, signup: Any, interests: Interests, now: datetime) -> int:
    """The subscriber a confirmed sign-up becomes: found by address, or new."""
    row = conn.execute(
        select(t.subscribers).where(t.subscribers.c.email_key == signup.email_key)
    ).first()
    if row is None:
        categories, regions = interests(None, None)
        return int(
            conn.execute(
                t.subscribers.insert()
                .values(
                    email=signup.email,
                    email_key=signup.email_key,
                    name=signup.name,
                    locale=signup.locale,
                    categories=sorted(categories),
                    regions=sorted(regions),
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
                .returning(t.subscribers.c.id)
            ).scalar_one()
        )
    categories, regions = interests(frozenset(row.categories or ()), frozenset(row.regions or ()))
    conn.execute(
        update(t.subscribers)
        .where(t.subscribers.c.id == row.id)
        .values(
            name=signup.name or row.name,
            # A locale of their own stays; one without gets the sign-up page's language.
            locale=row.locale or signup.locale,
            categories=sorted(categories),
            regions=sorted(regions),
            updated_at=now,
        )
    )
    return int(row.id)
