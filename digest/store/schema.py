"""Tables of the store (SQLAlchemy Core). Migrations in ``migrations/`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and returns them aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("newsletter", String(100), nullable=False),
    Column("name", String(200), nullable=False),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("fetched_at", UTCDateTime()),
    Column("last_error", Text),
    UniqueConstraint("newsletter", "name", name="uq_sources_newsletter_name"),
)

issues = Table(
    "issues",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("newsletter", String(100), nullable=False),
    Column("key", String(20), nullable=False),
    Column("window_start", UTCDateTime(), nullable=False),
    Column("window_end", UTCDateTime(), nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    UniqueConstraint("newsletter", "key", name="uq_issues_newsletter_key"),
)

articles = Table(
    "articles",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("newsletter", String(100), nullable=False),
    Column("uid", String(1000), nullable=False),
    Column("source", String(200), nullable=False),
    Column("title", Text, nullable=False),
    Column("link", Text, nullable=False),
    Column("published", UTCDateTime(), nullable=False),
    Column("updated", UTCDateTime()),
    Column("author", Text),
    Column("category", String(100), nullable=False),
    Column("region", Text),
    Column("summary", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("image_url", Text),
    Column("image_alt", Text),
    Column("label", Text),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="SET NULL")),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    UniqueConstraint("newsletter", "uid", name="uq_articles_newsletter_uid"),
    Index("ix_articles_newsletter_published", "newsletter", "published"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    # As given, for display and the To header; unique by ``email_key`` (digest.core.addresses).
    Column("email", String(320), nullable=False, unique=True),
    Column("email_key", String(320)),  # None only on tombstones of merged duplicates
    Column("merged_into", Integer),  # a tombstone's survivor (migration 0003)
    Column("name", Text, nullable=False),
    Column("locale", String(20)),
    Column("categories", JSON, nullable=False),
    Column("regions", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_subscribers_email_key", "email_key", unique=True),
)

memberships = Table(
    "memberships",
    metadata,
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("list_name", String(100), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

unsubscriptions = Table(
    "unsubscriptions",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("newsletter", String(100), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), nullable=False),
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("email", String(320), nullable=False),
    Column("segments", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("message_id", String(300)),
    Column("smtp_code", Integer),
    Column("smtp_reply", Text),
    Column("attempts", Integer, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # What came back after the relay accepted it (migration 0008; digest.mailboxes.bounces).
    Column("bounce", String(20)),  # delayed, soft, policy, hard or complaint
    Column("bounce_status", String(20)),  # enhanced status code, e.g. 5.1.1
    Column("bounce_diagnostic", Text),
    Column("bounced_at", UTCDateTime()),
    # When a deferred row may be claimed again (NULL: now), and when it was first claimed.
    Column("next_attempt_at", UTCDateTime()),
    Column("first_attempt_at", UTCDateTime()),
    # The sender (``senders.id``) holding a row in 'sending' (migration 0009). No foreign
    # key: a sender's row is deleted once it is stale, and a name that is gone means
    # the same as a stale one (see digest.store.senders).
    Column("claimed_by", Integer),
    UniqueConstraint("issue_id", "subscriber_id", name="uq_deliveries_issue_subscriber"),
    Index("ix_deliveries_issue_state", "issue_id", "state"),
    Index("ix_deliveries_message_id", "message_id"),
    Index("ix_deliveries_subscriber_bounce", "subscriber_id", "bounce"),
    Index("ix_deliveries_state_next_attempt", "state", "next_attempt_at"),
)

senders = Table(
    "senders",
    metadata,
    # Each process that claims ledger rows, while it runs (see digest.store.senders).
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    # Never an id again once deleted (SQLite would reuse the highest): a new sender must
    # not inherit the rows of a gone one that had its id.
    sqlite_autoincrement=True,
)

#: ``suppressions.scope`` of a suppression that holds for every newsletter.
ALL_NEWSLETTERS = "*"

suppressions = Table(
    "suppressions",
    metadata,
    # HMAC-SHA256 of the address's key (digest.core.addresses.address_hash); never the address.
    Column("address_hash", String(64), primary_key=True),
    Column("scope", String(100), primary_key=True),  # a newsletter id, or ALL_NEWSLETTERS
    Column("reason", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("newsletter", String(100)),
    Column("list_name", String(100)),
    Column("source", String(20), nullable=False),  # 'import' or 'signup'
    Column("statement", Text, nullable=False),
    Column("text_version", String(100)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("ip", String(45)),
    Column("user_agent", Text),
    Column("page_url", Text),
    Column("confirmed_at", UTCDateTime()),
    Column("confirm_ip", String(45)),
    Index("ix_consents_subscriber", "subscriber_id"),
)

#: Sign-ups waiting for their double opt-in, with the proof kept until confirmation
#: (then copied into ``consents``); unconfirmed ones are deleted after ``confirm_days``.
signups = Table(
    "signups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("newsletter", String(100), nullable=False),
    Column("email", String(320), nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("name", Text, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("regions", JSON, nullable=False),
    Column("locale", String(20)),
    Column("statement", Text, nullable=False),
    Column("text_version", String(100)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("ip", String(45)),
    Column("user_agent", Text),
    Column("page_url", Text),
    Column("confirmed_at", UTCDateTime()),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL")),
    Column("consent_id", Integer, ForeignKey("consents.id", ondelete="SET NULL")),
    Index("ix_signups_email_key", "email_key"),
)

#: Mail other than issues (confirmation requests), sent by a loop with backoff. A row is
#: one request: ``request_id`` is unique, and a row with ``sent_at`` is never sent again.
mail_queue = Table(
    "mail_queue",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("newsletter", String(100), nullable=False),
    Column("recipient_key", String(320), nullable=False),
    Column("signup_id", Integer, ForeignKey("signups.id", ondelete="CASCADE")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("given_up_at", UTCDateTime()),
    Column("last_error", Text),
    Index("ix_mail_queue_due", "sent_at", "next_attempt_at"),
    Index("ix_mail_queue_recipient", "recipient_key", "created_at"),
)

#: When a confirmation mail was last queued per newsletter and address: the key that
#: makes "one confirmation per address and interval" hold when sign-ups race (an
#: upsert on it is atomic where a look at ``mail_queue`` followed by an insert is not).
#: Keyed by the suppression list's hash, so it holds no address.
confirm_limits = Table(
    "confirm_limits",
    metadata,
    Column("newsletter", String(100), primary_key=True),
    Column("address_hash", String(64), primary_key=True),
    Column("queued_at", UTCDateTime(), nullable=False),
)

#: People who edit and approve issues in the web app (``/admin``); argon2 hashes only.
editors = Table(
    "editors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("email", String(320), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # 'editor' edits and approves issues; 'admin' also handles readers' requests (0013).
    Column("role", String(20), nullable=False, server_default="editor"),
)

#: A logged-in editor: the SHA-256 of the random cookie value, never the value itself.
editor_sessions = Table(
    "editor_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("editor_id", Integer, ForeignKey("editors.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

#: An editor's changes to one article of one issue, keyed by (newsletter, week, uid):
#: the coming issue has no row in ``issues`` until it is composed for sending.
article_edits = Table(
    "article_edits",
    metadata,
    Column("newsletter", String(100), primary_key=True),
    Column("week", String(20), primary_key=True),
    Column("article_uid", String(1000), primary_key=True),
    Column("excluded", Boolean, nullable=False),
    Column("pinned", Boolean, nullable=False),
    Column("rank", Integer),
    Column("teaser", Text),
    Column("updated_by", String(100), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

#: Per issue: the editors' intro text, the approval and when the editors were asked.
issue_reviews = Table(
    "issue_reviews",
    metadata,
    Column("newsletter", String(100), primary_key=True),
    Column("week", String(20), primary_key=True),
    Column("intro", Text, nullable=False),
    Column("intro_by", String(100)),
    Column("intro_at", UTCDateTime()),
    Column("approved_by", String(100)),
    Column("approved_at", UTCDateTime()),
    Column("review_mailed_at", UTCDateTime()),
)

#: Who changed what in an issue, and when: the short history the editors see.
edit_history = Table(
    "edit_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("newsletter", String(100), nullable=False),
    Column("week", String(20), nullable=False),
    Column("article_uid", String(1000)),
    Column("action", String(20), nullable=False),
    Column("detail", Text, nullable=False),
    Column("editor", String(100), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_edit_history_issue", "newsletter", "week", "id"),
)

#: Who looked at or acted on a reader's data in the editors' area, and when (migration
#: 0013). The reader is named by the keyed hash of the address (as on the suppression
#: list) and the subscriber id, never by the address: an entry outlives an erasure.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("editor", String(100), nullable=False),
    Column("action", String(20), nullable=False),  # search, view, export, unsubscribe, erase
    Column("address_hash", String(64)),
    Column("subscriber_id", Integer),  # no foreign key: the entry outlives the row's data
    Column("newsletter", String(100)),  # of an unsubscribe
    Index("ix_audit_log_address_hash", "address_hash"),
    Index("ix_audit_log_subscriber_id", "subscriber_id"),
)

#: Where the cluster's schedule stands, per job name ("newsletter:<id>", "collect:<id>",
#: "retry", …): ``due_at`` the last due time handled (the time its trigger counts on
#: from), ``ticked_at`` the time up to which due times have been handled. Locked by the
#: tick that advances it (see digest.cluster.tick).
schedule_marks = Table(
    "schedule_marks",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("due_at", UTCDateTime()),
    Column("ticked_at", UTCDateTime()),
)

#: How often each article of an issue was opened, per day, channel ('mail', 'web') and
#: kind ('read', 'scanner'). Counts only: nothing that names or stands for a reader.
click_counts = Table(
    "click_counts",
    metadata,
    Column("issue_id", Integer, ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("channel", String(10), primary_key=True),
    Column("kind", String(10), primary_key=True),
    Column("count", Integer, nullable=False),
)
