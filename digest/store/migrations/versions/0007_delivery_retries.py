"""Deferred deliveries are retried by themselves: when the next attempt is due.

Revision ID: 0007
Revises: 0006

``deliveries.next_attempt_at`` is when a deferred row (4xx, dropped connection) may be
claimed again (NULL: at once); ``first_attempt_at`` is when it was first claimed, from
which its maximum age counts. ``attempts`` and ``smtp_reply`` (the last reply) exist.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("first_attempt_at", UTCDateTime(), nullable=True))
    op.create_index("ix_deliveries_state_next_attempt", "deliveries", ["state", "next_attempt_at"])
    # Rows claimed before this revision count their age from their last change.
    op.execute(
        "UPDATE deliveries SET first_attempt_at = updated_at "
        "WHERE attempts > 0 AND first_attempt_at IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_state_next_attempt", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("first_attempt_at")
        batch.drop_column("next_attempt_at")
