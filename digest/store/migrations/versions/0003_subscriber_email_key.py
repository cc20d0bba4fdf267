"""Subscribers are unique by their address's key, not its spelling; merge the duplicates.

Revision ID: 0003
Revises: 0002

``Anna.Case@example.com`` and ``anna.case@example.com`` are one mailbox, but were two
subscribers: an unsubscribe through one left the other receiving. Each subscriber now
has an ``email_key`` (the address lower-cased, its domain canonical), unique.

Subscribers that share a key are merged:

- the oldest row (lowest id) survives; it keeps its id, address spelling and creation
  time, and takes name, locale and interests from the most recently updated copy;
- it is on every list any copy was on;
- an unsubscription of any copy holds for the survivor: unsubscribed from a newsletter
  through either spelling means unsubscribed;
- ledger rows move to the survivor; where both copies have a row for the same issue the
  one further along is kept (sent, then sending, failed, pending, skipped), so nobody
  gets an issue twice that either spelling already received;
- the other rows stay as tombstones (status 'merged', ``merged_into`` the survivor, no
  key): unsubscribe links already sent carry their ids and must still work, and their
  ids must never be given to someone else (SQLite reuses a deleted highest rowid).

Only columns are added and no table is rebuilt: rebuilding ``subscribers`` on SQLite
would drop it, and with it every row that references it through ON DELETE CASCADE.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op
from email_validator import EmailNotValidError, validate_email

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The tables as this revision knows them; the application's schema may move on.
subscribers = sa.table(
    "subscribers",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("name", sa.Text),
    sa.column("locale", sa.String),
    sa.column("categories", sa.JSON),
    sa.column("regions", sa.JSON),
    sa.column("status", sa.String),
    sa.column("updated_at", sa.DateTime),
    sa.column("email_key", sa.String),
    sa.column("merged_into", sa.Integer),
)
memberships = sa.table(
    "memberships",
    sa.column("subscriber_id", sa.Integer),
    sa.column("list_name", sa.String),
    sa.column("created_at", sa.DateTime),
)
unsubscriptions = sa.table(
    "unsubscriptions",
    sa.column("subscriber_id", sa.Integer),
    sa.column("newsletter", sa.String),
    sa.column("created_at", sa.DateTime),
)
deliveries = sa.table(
    "deliveries",
    sa.column("id", sa.Integer),
    sa.column("issue_id", sa.Integer),
    sa.column("subscriber_id", sa.Integer),
    sa.column("state", sa.String),
)

#: Which of two ledger rows for one issue and one mailbox is kept: the one further along.
STATE_RANK = {"sent": 5, "sending": 4, "failed": 3, "pending": 2, "skipped": 1}


def email_key(address: str) -> str:
    """digest.core.addresses.email_key as of this revision (a change to it needs a migration)."""
    text = address.strip()
    if text.isascii() and "xn--" not in text.lower():
        return text.lower()  # what validation would give, without its cost
    with contextlib.suppress(EmailNotValidError):
        text = validate_email(text, check_deliverability=False, allow_smtputf8=True).normalized
    local, at, domain = text.rpartition("@")
    return f"{local.lower()}{at}{domain.lower()}" if at else text.lower()


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("email_key", sa.String(320), nullable=True))
    op.add_column("subscribers", sa.Column("merged_into", sa.Integer, nullable=True))
    conn = op.get_bind()
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(sa.select(subscribers).order_by(subscribers.c.id)):
        groups[email_key(row.email)].append(row)
    for key, rows in groups.items():
        survivor, others = rows[0], rows[1:]
        if others:
            _merge(conn, survivor, others)
        conn.execute(
            subscribers.update().where(subscribers.c.id == survivor.id).values(email_key=key)
        )
    op.create_index("ix_subscribers_email_key", "subscribers", ["email_key"], unique=True)


def _merge(conn: sa.Connection, survivor: Any, others: list[Any]) -> None:
    sid = survivor.id
    latest = max([survivor, *others], key=lambda r: (r.updated_at, r.id))
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == sid)
        .values(
            name=latest.name,
            locale=latest.locale,
            categories=latest.categories,
            regions=latest.regions,
            updated_at=latest.updated_at,
        )
    )
    for other in others:
        oid = other.id
        have = set(
            conn.execute(
                sa.select(memberships.c.list_name).where(memberships.c.subscriber_id == sid)
            ).scalars()
        )
        for name, created in conn.execute(
            sa.select(memberships.c.list_name, memberships.c.created_at).where(
                memberships.c.subscriber_id == oid
            )
        ).all():
            if name not in have:
                conn.execute(
                    memberships.insert().values(
                        subscriber_id=sid, list_name=name, created_at=created
                    )
                )
        conn.execute(memberships.delete().where(memberships.c.subscriber_id == oid))

        gone = set(
            conn.execute(
                sa.select(unsubscriptions.c.newsletter).where(
                    unsubscriptions.c.subscriber_id == sid
                )
            ).scalars()
        )
        for newsletter, created in conn.execute(
            sa.select(unsubscriptions.c.newsletter, unsubscriptions.c.created_at).where(
                unsubscriptions.c.subscriber_id == oid
            )
        ).all():
            if newsletter not in gone:
                conn.execute(
                    unsubscriptions.insert().values(
                        subscriber_id=sid, newsletter=newsletter, created_at=created
                    )
                )
        conn.execute(unsubscriptions.delete().where(unsubscriptions.c.subscriber_id == oid))

        mine = {
            r.issue_id: r
            for r in conn.execute(sa.select(deliveries).where(deliveries.c.subscriber_id == sid))
        }
        for row in conn.execute(
            sa.select(deliveries).where(deliveries.c.subscriber_id == oid)
        ).all():
            kept = mine.get(row.issue_id)
            if kept is not None:
                if STATE_RANK.get(row.state, 0) <= STATE_RANK.get(kept.state, 0):
                    conn.execute(deliveries.delete().where(deliveries.c.id == row.id))
                    continue
                conn.execute(deliveries.delete().where(deliveries.c.id == kept.id))
            conn.execute(
                deliveries.update().where(deliveries.c.id == row.id).values(subscriber_id=sid)
            )
            mine[row.issue_id] = row

        conn.execute(
            subscribers.update()
            .where(subscribers.c.id == oid)
            .values(status="merged", merged_into=sid, email_key=None)
        )


def downgrade() -> None:
    # Merges are not undone: the tombstones stay, inactive, under their old addresses.
    op.drop_index("ix_subscribers_email_key", table_name="subscribers")
    op.drop_column("subscribers", "merged_into")
    op.drop_column("subscribers", "email_key")
