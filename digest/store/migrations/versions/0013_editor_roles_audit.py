"""Editors' roles, and the audit log of readers' requests handled in the editors' area.

Revision ID: 0013
Revises: 0011

``editors.role`` is 'editor' (edits and approves issues) or 'admin' (also sees readers'
personal data and handles their requests in ``/admin``). Every existing account becomes
an 'editor': until now no account could see a reader's data in the web app, so nobody
loses anything, and nobody gains access to personal data without an operator granting
it (``digest editors role NAME admin``).

``audit_log`` records who searched, viewed, exported, unsubscribed or erased a reader,
and when. The reader is named by the keyed hash of the address (the suppression list's)
and the subscriber id, never by the address, so the entries may stay after an erasure.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("editors") as batch:
        batch.add_column(sa.Column("role", sa.String(20), nullable=False, server_default="editor"))
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("editor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("address_hash", sa.String(64)),
        sa.Column("subscriber_id", sa.Integer),
        sa.Column("newsletter", sa.String(100)),
    )
    op.create_index("ix_audit_log_address_hash", "audit_log", ["address_hash"])
    op.create_index("ix_audit_log_subscriber_id", "audit_log", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_subscriber_id", table_name="audit_log")
    op.drop_index("ix_audit_log_address_hash", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("editors") as batch:
        batch.drop_column("role")
