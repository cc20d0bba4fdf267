"""A suppression list kept by keyed hash, and proof of consent per subscription.

Revision ID: 0004
Revises: 0003

``suppressions`` holds, for each address that must not be mailed, an HMAC-SHA256 of its
``email_key`` under the configured ``secret_key`` (never the address), the reason and
the scope: one newsletter id, or ``*`` for all of them. An erased subscriber leaves only
this row behind, so a later import does not mail the address again.

``consents`` keeps, per subscription, what the reader agreed to and how: the statement
and its version, sign-up time, IP address, user agent and page, confirmation time and IP
(double opt-in), or for an import the consent the operator stated.

Backfill: every per-newsletter unsubscription becomes a suppression of that newsletter.
The hash needs the key, which the store hands over as the ``suppression_key`` attribute;
a store with unsubscriptions cannot be upgraded without it.
"""

from __future__ import annotations

import hashlib
import hmac

import sqlalchemy as sa
from alembic import context, op

from digest.core.errors import StoreError
from digest.store.schema import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

subscribers = sa.table(
    "subscribers", sa.column("id", sa.Integer), sa.column("email_key", sa.String)
)
unsubscriptions = sa.table(
    "unsubscriptions",
    sa.column("subscriber_id", sa.Integer),
    sa.column("newsletter", sa.String),
    sa.column("created_at", UTCDateTime()),
)


def _hash(key: str, email_key: str) -> str:
    """digest.addresses.address_hash as of this revision, over a stored email_key."""
    return hmac.new(key.encode(), email_key.encode(), hashlib.sha256).hexdigest()


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            subscribers.c.email_key, unsubscriptions.c.newsletter, unsubscriptions.c.created_at
        )
        .join(subscribers, subscribers.c.id == unsubscriptions.c.subscriber_id)
        .where(subscribers.c.email_key.is_not(None))
    ).all()
    key = context.config.attributes.get("suppression_key")
    # Checked before any table is created: DDL on SQLite is not undone by a rollback.
    if rows and not key:
        raise StoreError(
            "migration 0004 needs secret_key to move the unsubscriptions onto the "
            "suppression list; open the store through the configuration"
        )
    suppressions = op.create_table(
        "suppressions",
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("newsletter", sa.String(100)),
        sa.Column("list_name", sa.String(100)),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("text_version", sa.String(100)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ip", sa.String(45)),
        sa.Column("user_agent", sa.Text),
        sa.Column("page_url", sa.Text),
        sa.Column("confirmed_at", UTCDateTime()),
        sa.Column("confirm_ip", sa.String(45)),
    )
    op.create_index("ix_consents_subscriber", "consents", ["subscriber_id"])

    if not rows:
        return
    assert suppressions is not None and key
    seen: set[tuple[str, str]] = set()
    values = []
    for email_key, newsletter, created_at in rows:
        pk = (_hash(key, email_key), newsletter)
        if pk not in seen:
            seen.add(pk)
            values.append(
                {
                    "address_hash": pk[0],
                    "scope": newsletter,
                    "reason": "unsubscribed",
                    "created_at": created_at,
                }
            )
    op.bulk_insert(suppressions, values)


def downgrade() -> None:
    # The unsubscriptions table was kept, so per-newsletter withdrawals survive; global
    # suppressions (bounces, complaints, erasures) are lost with the table.
    op.drop_index("ix_consents_subscriber", table_name="consents")
    op.drop_table("consents")
    op.drop_table("suppressions")
