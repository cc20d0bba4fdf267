"""One key per newsletter and address for the confirmation mail's interval.

Revision ID: 0009
Revises: 0008

``confirm_limits`` holds, per newsletter and address (the suppression list's keyed hash,
never the address), when a confirmation mail was last queued. A sign-up claims its
row with one atomic upsert, so concurrent sign-ups for one address queue one mail per
``confirm_interval_minutes`` on SQLite and PostgreSQL alike. The table starts empty:
a confirmation queued just before the upgrade does not count.

Consent proofs from the preference page stored the page with its link, whose token
opens the reader's data; they now hold the route ``/preferences/`` alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from digest.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "confirm_limits",
        sa.Column("newsletter", sa.String(100), primary_key=True),
        sa.Column("address_hash", sa.String(64), primary_key=True),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
    )
    consents = sa.table("consents", sa.column("source", sa.String), sa.column("page_url", sa.Text))
    op.execute(
        consents.update()
        .where(consents.c.source == "preferences", consents.c.page_url.like("/preferences/%"))
        .values(page_url="/preferences/")
    )


def downgrade() -> None:
    # The tokens removed from consent proofs are not brought back.
    op.drop_table("confirm_limits")
