"""The delivery ledger in chunks: plan, claim and record many rows per transaction.

A send never holds all of an issue's recipients or ledger rows: subscribers are read in
chunks by id, planned into the ledger chunk by chunk, and rows are claimed a chunk at a
time. Claiming is the one place where rows change hands between senders, so any number
of sender processes (on PostgreSQL also on several machines) can work through one issue
without coordinating beyond the ledger: each claim takes rows nobody else holds
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer at a time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    Update,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from digest.core.models import DeliveryState, Subscriber
from digest.store import schema as t
from digest.store.privacy import hashes_in_scopes, is_hard_bounce, leave_active, suppress_in
from digest.store.retries import due_now
from digest.store.senders import held_by_gone_sender
from digest.store.sql import utc_now
from digest.store.subscribers import subscriber_from_row

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["ClaimedRow", "LedgerStore", "MessageIdPattern", "Outcome", "PlannedRow"]


@dataclass(frozen=True, slots=True)
class PlannedRow:
    """A ledger row to add: pending, or already skipped with a reason."""

    subscriber_id: int
    email: str
    segments: Sequence[str]
    skipped: str | None = None  # the reason, for a row planned as skipped


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A ledger row this sender now holds (``sending``), with its Message-ID."""

    id: int
    subscriber_id: int
    email: str
    message_id: str | None
    resumed: bool  # left in 'sending' by a sender that stopped without an answer
    attempts: int = 0  # attempts a server answered about before this one
    first_attempt_at: datetime | None = None  # when a server first answered (retry age)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed row."""

    delivery_id: int
    state: str
    code: int | None
    reply: str
    # Pending with this set: deferred, not to be claimed before then (see digest.delivery.retry).
    next_attempt_at: datetime | None = None
    # A server answered about the message (a reply to its MAIL, RCPT or DATA, or a drop
    # in the middle of its transaction): the attempt counts towards the retry limits.
    answered: bool = True


@dataclass(frozen=True, slots=True)
class MessageIdPattern:
    """Message-IDs made by the claiming statement itself: ``<prefix.ROW.RANDOM@domain>``.

    The row id makes it unique in the store. RANDOM is 32 hex digits the database draws
    for each row from its own CSPRNG (see :func:`_random_hex`): a reader's copy shows
    their Message-ID, and a bounce that quotes one may be taken as about that delivery,
    so no Message-ID may tell anything about another's. No Python call and no second
    statement per row.
    """

    prefix: str
    domain: str


def _random_hex(postgres: bool) -> Any:
    """SQL for 32 random hex digits, new for each row the statement touches.

    SQLite's randomblob() and PostgreSQL's gen_random_uuid() (122 random bits; built in
    since PostgreSQL 13) both draw from the database's cryptographic generator.
    """
    if postgres:
        return func.replace(cast(func.gen_random_uuid(), String), "-", "")
    return func.lower(func.hex(func.randomblob(16)))


@cache
def _outcome_update(*, held: bool) -> Update:
    """The statement that records one outcome (run for many); built once, as a send
    runs it many times a second. ``held``: only while the row is held by b_claimer."""
    c = t.deliveries.c
    answered = bindparam("b_answered", type_=Integer())
    now = bindparam("b_now", type_=c.updated_at.type)
    ours = c.id == bindparam("b_id")
    if held:
        ours = and_(
            ours,
            c.claimed_by == bindparam("b_claimer", type_=Integer()),
            c.state == DeliveryState.SENDING,
        )
    return (
        update(t.deliveries)
        .where(ours)
        .values(
            state=bindparam("b_state"),
            smtp_code=bindparam("b_code"),
            smtp_reply=bindparam("b_reply"),
            next_attempt_at=bindparam("b_next", type_=c.next_attempt_at.type),
            updated_at=now,
            attempts=c.attempts + answered,
            first_attempt_at=case(
                (answered > 0, func.coalesce(c.first_attempt_at, now)),
                else_=c.first_attempt_at,
            ),
        )
    )


class LedgerStore:
    """The ledger operations of :class:`~digest.store.Store` that work in chunks."""

    engine: Engine
    address_hash: Any

    # --- who the issue goes to -----------------------------------------------------------

    def _recipient_query(self, lists: Iterable[str] | None, newsletter: str | None) -> Select:
        # EXISTS, not IN (subquery): SQLite materialises an IN list of every member of
        # the lists for each query, where EXISTS looks each subscriber up by key.
        s = t.subscribers.c
        # Only what a Subscriber holds (and email_key, for the suppression list): the
        # timestamps and consent columns cost a conversion per row and are not needed.
        query = select(s.id, s.email, s.email_key, s.name, s.categories, s.regions, s.locale)
        query = query.where(s.status == "active")
        if lists is not None:
            m = t.memberships.c
            query = query.where(
                select(m.subscriber_id)
                .where(m.subscriber_id == s.id, m.list_name.in_(list(lists)))
                .exists()
            )
        if newsletter is not None:
            u = t.unsubscriptions.c
            query = query.where(
                ~select(u.subscriber_id)
                .where(u.subscriber_id == s.id, u.newsletter == newsletter)
                .exists()
            )
        return query

    def suppressed_hashes(self, newsletter: str | None) -> set[str]:
        """The suppression list's hashes that hold for ``newsletter`` (or for all)."""
        scopes = [t.ALL_NEWSLETTERS] + ([newsletter] if newsletter else [])
        with self.engine.connect() as conn:
            return hashes_in_scopes(conn, scopes)

    def _subscribers(
        self, conn: Connection, query: Select, suppressed: set[str]
    ) -> list[Subscriber]:
        rows = conn.execute(query).all()
        if suppressed:
            hashed = self.address_hash  # raises without a key: never mail blindly
            rows = [r for r in rows if hashed(r.email_key or r.email) not in suppressed]
        member_of: dict[int, set[str]] = {}
        ids = [r.id for r in rows]
        if ids:
            for sid, name in conn.execute(
                select(t.memberships.c.subscriber_id, t.memberships.c.list_name).where(
                    t.memberships.c.subscriber_id.in_(ids)
                )
            ):
                member_of.setdefault(sid, set()).add(name)
        return [subscriber_from_row(r, member_of.get(r.id, set())) for r in rows]

    def active_subscribers(
        self, lists: Iterable[str] | None = None, *, newsletter: str | None = None
    ) -> list[Subscriber]:
        """Active subscribers on any of ``lists`` (all lists when None), with their lists.

        Addresses on the suppression list for every newsletter are left out; with
        ``newsletter``, also those who unsubscribed from or are suppressed for it.
        """
        query = self._recipient_query(lists, newsletter).order_by(t.subscribers.c.id)
        suppressed = self.suppressed_hashes(newsletter)
        with self.engine.connect() as conn:
            return self._subscribers(conn, query, suppressed)

    def iter_active_subscribers(
        self,
        lists: Iterable[str] | None = None,
        *,
        newsletter: str | None = None,
        chunk: int = 1000,
        not_in_issue: int | None = None,
        suppressed: set[str] | None = None,
    ) -> Iterator[list[Subscriber]]:
        """Chunks of :meth:`active_subscribers` in id order, one short transaction each.

        With ``not_in_issue`` only those without a row in that issue's ledger.
        """
        lists = list(lists) if lists is not None else None
        if suppressed is None:
            suppressed = self.suppressed_hashes(newsletter)
        query = self._recipient_query(lists, newsletter)
        if not_in_issue is not None:
            d = t.deliveries.c
            query = query.where(
                ~select(d.id)
                .where(d.issue_id == not_in_issue, d.subscriber_id == t.subscribers.c.id)
                .exists()
            )
        after = 0
        while True:
            with self.engine.connect() as conn:
                raw = conn.execute(
                    query.where(t.subscribers.c.id > after)
                    .order_by(t.subscribers.c.id)
                    .limit(chunk)
                    .with_only_columns(t.subscribers.c.id)
                ).scalars()
                ids = list(raw)
                if not ids:
                    return
                after = ids[-1]
                found = self._subscribers(
                    conn,
                    query.where(t.subscribers.c.id.in_(ids)).order_by(t.subscribers.c.id),
                    suppressed,
                )
            if found:
                yield found

    def count_active_subscribers(self) -> int:
        """Active subscribers of every list: a quick upper bound of an audience."""
        s = t.subscribers.c
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(s.status == "active")).scalar_one())

    def subscribers_by_id(
        self,
        ids: Sequence[int],
        lists: Iterable[str] | None,
        *,
        newsletter: str | None,
        suppressed: set[str],
    ) -> dict[int, Subscriber]:
        """Those of ``ids`` who are active subscribers of ``lists`` now, by id."""
        if not ids:
            return {}
        query = self._recipient_query(lists, newsletter).where(t.subscribers.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            return {s.id: s for s in self._subscribers(conn, query, suppressed) if s.id}

    # --- the ledger ----------------------------------------------------------------------

    def plan_rows(
        self, issue_id: int, planned: Sequence[PlannedRow], now: datetime | None = None
    ) -> int:
        """Add ledger rows not yet in the ledger, in one statement; returns rows added.

        Rows already there are left as they are: planning twice never sends twice.
        """
        if not planned:
            return 0
        now = now or utc_now()
        rows = [
            {
                "issue_id": issue_id,
                "subscriber_id": p.subscriber_id,
                "email": p.email,
                "segments": json.dumps(list(p.segments)),
                "state": DeliveryState.SKIPPED if p.skipped else DeliveryState.PENDING,
                "smtp_reply": p.skipped,
                "attempts": 0,
                "updated_at": now,
            }
            for p in planned
        ]
        with self.engine.begin() as conn:
            insert: Any = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
            # One statement compiled once (and cached), its rows sent in batches by
            # SQLAlchemy's "insertmanyvalues"; RETURNING tells what was added on every
            # driver, where rowcount does not for INSERT ... ON CONFLICT on psycopg.
            done = conn.execute(
                insert(t.deliveries).on_conflict_do_nothing().returning(t.deliveries.c.id),
                rows,
            )
            return len(done.all())

    def claim_deliveries(
        self,
        issue_id: int,
        *,
        after_id: int,
        limit: int,
        stale_before: datetime,
        new_message_id: Any,
        now: datetime | None = None,
        due_by: datetime | None = None,
        claimer: int | None = None,
    ) -> list[ClaimedRow]:
        """Take up to ``limit`` rows after ``after_id`` to send, in one transaction.

        The rows are pending ones that are due (not deferred past ``due_by``, by default
        ``now``; see :func:`digest.store.retries.due_now`) and those left in 'sending'
        by a sender that is gone: its heartbeat older than ``stale_before`` (see
        :mod:`digest.store.senders`). Those keep their Message-ID, so a repeat can be
        recognised. Each becomes 'sending', held by ``claimer`` (a registered sender),
        with a Message-ID (for a row that has none yet ``new_message_id()``, or made by
        the statement from a :class:`MessageIdPattern`); the attempt counts once a
        server answers (:meth:`record_outcomes`). Rows another sender holds are
        skipped, never waited for. This is the only function that decides which rows
        are due.
        """
        c = t.deliveries.c
        now = now or utc_now()
        wanted = [
            and_(c.state == DeliveryState.PENDING, due_now(due_by or now)),
            and_(c.state == DeliveryState.SENDING, held_by_gone_sender(stale_before)),
        ]
        due = or_(*wanted)
        # Another sender (SQLite has no SKIP LOCKED) may take every row found between
        # the select and the update: then look further, so that an empty answer always
        # means that no row after ``after_id`` is left to take.
        while True:
            found, taken, ids_given = self._claim_once(
                issue_id, after_id, limit, wanted, due, now, new_message_id, claimer
            )
            if taken or not found:
                break
            after_id = found[-1].id
        was_sending = {r.id for r in found if r.state == DeliveryState.SENDING}
        return sorted(
            (
                ClaimedRow(
                    r.id,
                    r.subscriber_id,
                    r.email,
                    r.message_id or ids_given[r.id],
                    r.id in was_sending,
                    r.attempts,
                    r.first_attempt_at,
                )
                for r in taken
            ),
            key=lambda row: row.id,
        )

    def _claim_once(
        self,
        issue_id: int,
        after_id: int,
        limit: int,
        wanted: list[Any],
        due: Any,
        now: datetime,
        new_message_id: Any,
        claimer: int | None,
    ) -> tuple[list[Any], list[Any], dict[int, str]]:
        """One claiming transaction: (rows found, rows taken, Message-IDs given)."""
        c = t.deliveries.c
        # Two queries, each in the order of the (issue_id, state) index, rather than
        # one with OR: that one collects and sorts every due row after ``after_id``.
        with self.engine.begin() as conn:
            postgres = conn.dialect.name == "postgresql"
            found: list[Any] = []
            for state in wanted:
                candidates = (
                    select(c.id, c.state)
                    .where(c.issue_id == issue_id, c.id > after_id, state)
                    .order_by(c.id)
                    .limit(limit)
                )
                if postgres:
                    candidates = candidates.with_for_update(skip_locked=True)
                found += conn.execute(candidates).all()
            found = sorted(found, key=lambda r: r.id)[:limit]
            if not found:
                return [], [], {}
            ids = [r.id for r in found]
            values: dict[str, Any] = {
                "state": DeliveryState.SENDING,
                "claimed_by": claimer,
                "updated_at": now,
                "next_attempt_at": None,
            }
            if isinstance(new_message_id, MessageIdPattern):
                values["message_id"] = func.coalesce(
                    c.message_id,
                    literal(f"<{new_message_id.prefix}.")
                    + cast(c.id, String)
                    + literal(".")
                    + _random_hex(postgres)
                    + literal(f"@{new_message_id.domain}>"),
                )
            # The state is checked again in the update: on SQLite another sender may
            # have claimed a row between the select and this statement.
            taken = conn.execute(
                update(t.deliveries)
                .where(c.id.in_(ids), due)
                .values(**values)
                .returning(
                    c.id, c.subscriber_id, c.email, c.message_id, c.attempts, c.first_attempt_at
                )
            ).all()
            fresh = [
                {"b_id": r.id, "message_id": new_message_id()}
                for r in taken
                if r.message_id is None and not isinstance(new_message_id, MessageIdPattern)
            ]
            ids_given = {f["b_id"]: f["message_id"] for f in fresh}
            if fresh:
                conn.execute(
                    update(t.deliveries)
                    .where(c.id == bindparam("b_id"))
                    .values(message_id=bindparam("message_id")),
                    fresh,
                )
        return found, list(taken), ids_given

    def record_outcomes(
        self,
        outcomes: Sequence[Outcome],
        now: datetime | None = None,
        *,
        claimer: int | None = None,
    ) -> None:
        """Record the outcome of many deliveries in one transaction.

        With ``claimer`` only rows that sender still holds are written: a row taken
        over meanwhile (its sender was taken for gone) belongs to the new holder. An
        outcome a server answered about counts an attempt, and the first such one
        sets ``first_attempt_at``, from which the row's age for retries counts.

        A refusal of the address itself (5xx with enhanced code 5.1.x) puts the address
        on the suppression list for every newsletter (reason 'hard_bounce'), in the same
        transaction. A policy refusal (5.7.x) is the sender's problem and suppresses
        nothing.
        """
        if not outcomes:
            return
        now = now or utc_now()
        c = t.deliveries.c
        with self.engine.begin() as conn:
            conn.execute(
                _outcome_update(held=claimer is not None),
                [
                    {
                        "b_id": o.delivery_id,
                        "b_state": o.state,
                        "b_code": o.code,
                        "b_reply": o.reply[:2000],
                        "b_next": o.next_attempt_at,
                        "b_answered": int(o.answered),
                        "b_now": now,
                        "b_claimer": claimer,
                    }
                    for o in outcomes
                ],
            )
            for o in outcomes:
                if o.state == DeliveryState.FAILED and is_hard_bounce(o.code, o.reply):
                    key = conn.execute(
                        select(t.subscribers.c.email_key)
                        .join(t.deliveries, c.subscriber_id == t.subscribers.c.id)
                        .where(c.id == o.delivery_id)
                    ).scalar()
                    if key is not None:
                        suppress_in(conn, self.address_hash(key), "hard_bounce", None, now)
                        leave_active(conn, key, "hard_bounce", now)

    def count_sending(self, issue_id: int) -> int:
        """Rows of the issue in 'sending' now (held by a sender, or left by one)."""
        c = t.deliveries.c
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        c.issue_id == issue_id, c.state == DeliveryState.SENDING
                    )
                ).scalar_one()
            )

    def release_deliveries(
        self, delivery_ids: Sequence[int], *, claimer: int | None = None
    ) -> None:
        """Give rows claimed but not answered about back: pending and due, as they were
        (no attempt counted). With ``claimer`` only the rows that sender still holds."""
        c = t.deliveries.c
        with self.engine.begin() as conn:
            for start in range(0, len(delivery_ids), 500):
                ours = and_(
                    c.id.in_(delivery_ids[start : start + 500]),
                    c.state == DeliveryState.SENDING,
                )
                if claimer is not None:
                    ours = and_(ours, c.claimed_by == claimer)
                conn.execute(
                    update(t.deliveries)
                    .where(ours)
                    .values(state=DeliveryState.PENDING, claimed_by=None)
                )
