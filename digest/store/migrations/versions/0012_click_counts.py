"""How often each article of an issue was opened: counts, and nothing about who.

Revision ID: 0012
Revises: 0011

With ``click_counts = true`` a newsletter's article links go through ``/r/<token>``
(see digest.web.clicks). ``click_counts`` holds one row per issue, article, day,
channel (``mail``: the digest as mailed; ``web``: its archive page) and kind (``read``;
``scanner``: what looked like a mail gateway's link scanner) with a count. No column
names or stands for a reader: no subscriber id, address, IP address, user agent or cookie.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "click_counts",
        sa.Column(
            "issue_id",
            sa.Integer,
            sa.ForeignKey("issues.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "article_id",
            sa.Integer,
            sa.ForeignKey("articles.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("channel", sa.String(10), primary_key=True),
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("click_counts")
