"""Pending sign-ups (double opt-in) and a queue for confirmation mail.

Revision ID: 0005
Revises: 0004

``signups`` holds a sign-up until its confirmation: the choices made on the page and
the proof of consent (statement, version, time, IP, user agent, page). Confirming one
creates or updates the subscriber and copies the proof into ``consents``.

``mail_queue`` holds one row per mail to send outside an issue: claimed with a lease,
retried with backoff, and marked sent once the relay accepted it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("newsletter", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("regions", sa.JSON, nullable=False),
        sa.Column("locale", sa.String(20)),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("text_version", sa.String(100)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ip", sa.String(45)),
        sa.Column("user_agent", sa.Text),
        sa.Column("page_url", sa.Text),
        sa.Column("confirmed_at", UTCDateTime()),
        sa.Column(
            "subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id", ondelete="SET NULL")
        ),
        sa.Column("consent_id", sa.Integer, sa.ForeignKey("consents.id", ondelete="SET NULL")),
    )
    op.create_index("ix_signups_email_key", "signups", ["email_key"])
    op.create_table(
        "mail_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("newsletter", sa.String(100), nullable=False),
        sa.Column("recipient_key", sa.String(320), nullable=False),
        sa.Column("signup_id", sa.Integer, sa.ForeignKey("signups.id", ondelete="CASCADE")),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("lease_until", UTCDateTime()),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("given_up_at", UTCDateTime()),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_mail_queue_due", "mail_queue", ["sent_at", "next_attempt_at"])
    op.create_index("ix_mail_queue_recipient", "mail_queue", ["recipient_key", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_mail_queue_recipient", table_name="mail_queue")
    op.drop_index("ix_mail_queue_due", table_name="mail_queue")
    op.drop_table("mail_queue")
    op.drop_index("ix_signups_email_key", table_name="signups")
    op.drop_table("signups")
