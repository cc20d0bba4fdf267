"""Per-newsletter unsubscriptions; unbounded text for values that come from outside.

Revision ID: 0002
Revises: 0001

An unsubscribe link names one newsletter, so withdrawing from it must not end the
others. ETags, Last-Modified values, labels and regions come from feeds and servers and
have no length a VARCHAR could promise (PostgreSQL refuses a longer value).
"""

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsubscriptions",
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("newsletter", sa.String(100), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table("sources") as batch:
        batch.alter_column("etag", type_=sa.Text, existing_type=sa.String(500))
        batch.alter_column("last_modified", type_=sa.Text, existing_type=sa.String(100))
    with op.batch_alter_table("articles") as batch:
        batch.alter_column("region", type_=sa.Text, existing_type=sa.String(100))
        batch.alter_column("label", type_=sa.Text, existing_type=sa.String(100))


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.alter_column("label", type_=sa.String(100), existing_type=sa.Text)
        batch.alter_column("region", type_=sa.String(100), existing_type=sa.Text)
    with op.batch_alter_table("sources") as batch:
        batch.alter_column("last_modified", type_=sa.String(100), existing_type=sa.Text)
        batch.alter_column("etag", type_=sa.String(500), existing_type=sa.Text)
    op.drop_table("unsubscriptions")
