"""Bounces and complaints that arrive after the SMTP transaction, on the delivery row.

Revision ID: 0008
Revises: 0005

A delivery the relay accepted can still bounce later (a DSN to the return path) or be
reported as spam (an ARF report). ``bounce`` holds the worst such outcome of the row
('delayed', 'soft', 'policy', 'hard' or 'complaint'), with the enhanced status code, the
remote server's diagnostic and the time it was processed. The index on ``message_id``
finds the delivery of a bounce that carries no return path, by the returned message.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("bounce", sa.String(20)))
        batch.add_column(sa.Column("bounce_status", sa.String(20)))
        batch.add_column(sa.Column("bounce_diagnostic", sa.Text))
        batch.add_column(sa.Column("bounced_at", UTCDateTime()))
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])
    op.create_index("ix_deliveries_subscriber_bounce", "deliveries", ["subscriber_id", "bounce"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_bounce", table_name="deliveries")
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("bounced_at")
        batch.drop_column("bounce_diagnostic")
        batch.drop_column("bounce_status")
        batch.drop_column("bounce")
