"""Editors, their sessions, and their edits and approvals of issues.

Revision ID: 0006
Revises: 0005

``editors`` holds the accounts of the editors' area (argon2 password hashes, an email
address for review mail); ``editor_sessions`` the SHA-256 of each login's cookie value.
``article_edits`` keeps an editor's changes to one article of one issue (left out,
pinned, its place, its teaser) by (newsletter, week, article uid), since an issue that
has not gone out yet has no row in ``issues``; ``issue_reviews`` the intro text and the
approval of an issue; ``edit_history`` who changed what and when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "editors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "editor_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "editor_id",
            sa.Integer,
            sa.ForeignKey("editors.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "article_edits",
        sa.Column("newsletter", sa.String(100), primary_key=True),
        sa.Column("week", sa.String(20), primary_key=True),
        sa.Column("article_uid", sa.String(1000), primary_key=True),
        sa.Column("excluded", sa.Boolean, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("rank", sa.Integer),
        sa.Column("teaser", sa.Text),
        sa.Column("updated_by", sa.String(100), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "issue_reviews",
        sa.Column("newsletter", sa.String(100), primary_key=True),
        sa.Column("week", sa.String(20), primary_key=True),
        sa.Column("intro", sa.Text, nullable=False),
        sa.Column("intro_by", sa.String(100)),
        sa.Column("intro_at", UTCDateTime()),
        sa.Column("approved_by", sa.String(100)),
        sa.Column("approved_at", UTCDateTime()),
        sa.Column("review_mailed_at", UTCDateTime()),
    )
    op.create_table(
        "edit_history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("newsletter", sa.String(100), nullable=False),
        sa.Column("week", sa.String(20), nullable=False),
        sa.Column("article_uid", sa.String(1000)),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("editor", sa.String(100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_edit_history_issue", "edit_history", ["newsletter", "week", "id"])


def downgrade() -> None:
    op.drop_index("ix_edit_history_issue", table_name="edit_history")
    op.drop_table("edit_history")
    op.drop_table("issue_reviews")
    op.drop_table("article_edits")
    op.drop_table("editor_sessions")
    op.drop_table("editors")
