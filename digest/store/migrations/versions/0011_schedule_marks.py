"""How far the cluster's schedule has been handled, per job.

Revision ID: 0011
Revises: 0010

With a queue (``[cluster] queue``) the schedule is a tick job that any worker runs.
``schedule_marks`` has one row per scheduled job (a newsletter's run, its collecting,
the retry pass, the mailbox polls, the mail queue): its last due time handled and the
time up to which its due times have been handled. A tick locks the row, queues what
fell due since and advances it in one transaction, so each due time is queued once
however many ticks run at once. The table starts empty: a job without a row starts
from its first tick.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_marks",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("due_at", UTCDateTime(), nullable=True),
        sa.Column("ticked_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("schedule_marks")
