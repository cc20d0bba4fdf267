"""Ledger rows belong to a registered sender, not to an age.

Revision ID: 0010
Revises: 0009

``senders`` has one row per process that claims ledger rows (host, pid, when it
started, its last heartbeat); ``deliveries.claimed_by`` names the sender holding a
row in 'sending'. A row changes hands only once its sender's heartbeat is stale (see
digest.store.senders), where before it changed hands once the row itself was older
than a lease. Rows left in 'sending' before this revision have no sender: they are
taken over as rows of a stale one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "senders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        # A deleted sender's id is never given again (SQLite reuses the highest).
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claimed_by", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claimed_by")
    op.drop_table("senders")
