"""The assembled store: fetch state, articles, issues and the ledger's rows, over its parts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from digest.core.errors import ConfigError, StoreError
from digest.core.models import Article, DeliveryState, Image
from digest.core.redact import MASK, redact_url
from digest.store import schema as t
from digest.store.articles import ArticleStore
from digest.store.audit import AuditStore
from digest.store.backup import create_private_file, sqlite_path
from digest.store.bounces import BounceStore
from digest.store.clicks import ClickStore
from digest.store.editorial import EditorialStore
from digest.store.insight import InsightStore
from digest.store.ledger import LedgerStore, Outcome
from digest.store.migrating import MIGRATIONS as MIGRATIONS  # also known by this name here
from digest.store.migrating import upgrade
from digest.store.privacy import PrivacyStore
from digest.store.retries import RetryStore
from digest.store.schedule import ScheduleStore
from digest.store.senders import SenderStore
from digest.store.signups import SignupStore
from digest.store.sql import insert_ignoring_duplicates, transaction, utc_now
from digest.store.subscribers import SubscriberStore


def _bad_url(url: str, exc: Exception) -> ConfigError:
    """A config error about ``url`` that shows neither its password nor all of it."""
    if isinstance(exc, ArgumentError) and not str(exc).startswith("Could not parse"):
        return ConfigError("store.url", f"cannot use {redact_url(url)!r}: {redact_url(str(exc))}")
    if isinstance(exc, ValueError) and not isinstance(exc, ArgumentError):
        return ConfigError("store.url", f"has a port that is not a number: {redact_url(url)!r}")
    if isinstance(exc, ImportError):
        return ConfigError(
            "store.url", f"cannot use {redact_url(url)!r}: its driver is not installed ({exc.name})"
        )
    return ConfigError("store.url", "is not a database URL")


def resolve_store_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path absolute against ``base_dir`` (the config's folder)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _bad_url(url, exc) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if not path.is_absolute():
            return parsed.set(database=str((base_dir / path).resolve())).render_as_string(
                hide_password=False
            )
    return url


@dataclass(frozen=True)
class IssueRecord:
    """An issue as stored: its id, key, window, subject and state."""

    id: int
    newsletter: str
    key: str
    window_start: datetime
    window_end: datetime
    subject: str
    status: str
    sent_at: datetime | None


@dataclass(frozen=True)
class DeliveryRow:
    """One (issue, subscriber) line of the delivery ledger."""

    id: int
    issue_id: int
    subscriber_id: int
    email: str
    segments: tuple[str, ...]
    state: str
    message_id: str | None
    smtp_code: int | None
    smtp_reply: str | None
    attempts: int
    next_attempt_at: datetime | None = None  # deferred until then (None: due now)
    first_attempt_at: datetime | None = None
    updated_at: datetime | None = None  # of a row in 'sending': when it was claimed
    claimed_by: int | None = None  # of a row in 'sending': the sender holding it


class Store(
    AuditStore,
    ArticleStore,
    SignupStore,
    PrivacyStore,
    BounceStore,
    EditorialStore,
    RetryStore,
    SubscriberStore,
    LedgerStore,
    SenderStore,
    ScheduleStore,
    ClickStore,
    InsightStore,
):
    """Opened on a database URL; migrates the schema to the newest version on open.

    ``secret_key`` keys the hashes of the suppression list (see digest.store.privacy);
    without it the store cannot suppress, unsubscribe or honour suppressions.
    """

    def __init__(self, engine: Engine, secret_key: str | None = None) -> None:
        self.engine = engine
        self.secret_key = secret_key

    @classmethod
    def open(cls, url: str, *, migrate: bool = True, secret_key: str | None = None) -> Store:
        """The store at ``url``; a URL that cannot be used is a ConfigError on ``store.url``.

        No message shows the URL's password.
        """
        try:
            engine = create_engine(url)
        except (ArgumentError, ValueError, ImportError) as exc:
            raise _bad_url(url, exc) from None
        if engine.dialect.name == "sqlite":
            path = sqlite_path(engine.url)
            if path is not None:
                # Names, addresses and consent proofs: readable by the owner only.
                create_private_file(path)

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=10000")
                cursor.close()

        store = cls(engine, secret_key)
        if migrate:
            try:
                store.migrate()
                if secret_key:
                    store.check_suppression_key(secret_key)
            except BaseException:
                engine.dispose()
                raise
        return store

    def migrate(
        self, *, also: Callable[[Connection], None] | None = None
    ) -> tuple[str | None, str | None]:
        """Apply every migration not yet applied (idempotent); the revisions before and
        after. On PostgreSQL, processes migrating one store at once take turns (see
        :mod:`digest.store.migrating`). ``also`` runs in the same transaction, under the
        same lock, after the upgrade: it commits or rolls back with the migration.
        """
        try:
            with self.engine.begin() as connection:
                return upgrade(connection, suppression_key=self.secret_key, also=also)
        except DBAPIError as exc:
            raise self.unusable(exc) from None

    def unusable(self, exc: DBAPIError) -> StoreError:
        """The StoreError for a database that refused to open or migrate: its URL and
        the database's reason, without the password."""
        reason = " ".join(str(exc.orig or exc).split())
        password = self.engine.url.password
        if password:
            reason = reason.replace(str(password), MASK)
        return StoreError(f"cannot open the database {self.safe_url}: {redact_url(reason)}")

    @property
    def safe_url(self) -> str:
        """The URL to show: its password (and any password= parameter) masked."""
        return redact_url(self.engine.url.render_as_string(hide_password=True))

    def close(self) -> None:
        self.engine.dispose()

    # --- sources -------------------------------------------------------------------------

    def source_state(self, newsletter: str, name: str) -> tuple[str | None, str | None]:
        """The (etag, last_modified) remembered for a source, or (None, None)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.sources.c.etag, t.sources.c.last_modified).where(
                    t.sources.c.newsletter == newsletter, t.sources.c.name == name
                )
            ).first()
        return (row.etag, row.last_modified) if row else (None, None)

    def save_source_state(
        self,
        newsletter: str,
        name: str,
        *,
        etag: str | None,
        last_modified: str | None,
        error: str | None,
        now: datetime | None = None,
    ) -> None:
        values = {"fetched_at": now or utc_now(), "last_error": error}
        if error is None:
            values |= {"etag": etag, "last_modified": last_modified}
        with self.engine.begin() as conn:
            done = conn.execute(
                t.sources.update()
                .where(t.sources.c.newsletter == newsletter, t.sources.c.name == name)
                .values(values)
            )
            if not done.rowcount:
                conn.execute(
                    t.sources.insert().values(
                        newsletter=newsletter,
                        name=name,
                        etag=etag if error is None else None,
                        last_modified=last_modified if error is None else None,
                        **{k: v for k, v in values.items() if k in ("fetched_at", "last_error")},
                    )
                )

    # --- articles ------------------------------------------------------------------------

    def newest_published(self, newsletter: str, source: str) -> datetime | None:
        """When the newest article stored from ``source`` was published; None if none is."""
        c = t.articles.c
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.max(c.published)).where(c.newsletter == newsletter, c.source == source)
            ).scalar()

    def upsert_articles(
        self, newsletter: str, articles: Iterable[Article], now: datetime | None = None
    ) -> tuple[int, int]:
        """Insert new articles, update changed ones in place; returns (new, updated).

        An article is identified by its uid within a newsletter, so collecting the same
        feed twice, or two feeds carrying the same item, never duplicates it.
        """
        now = now or utc_now()
        by_uid: dict[str, Article] = {}
        for article in articles:
            by_uid.setdefault(article.uid, article)
        if not by_uid:
            return 0, 0
        new = changed = 0
        with self.engine.begin() as conn:
            existing: dict[str, Any] = {}
            uids = list(by_uid)
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                for found in conn.execute(
                    select(t.articles).where(
                        t.articles.c.newsletter == newsletter, t.articles.c.uid.in_(chunk)
                    )
                ):
                    existing[found.uid] = found
            for uid, article in by_uid.items():
                values = _article_values(article)
                row = existing.get(uid)
                if row is None:
                    conn.execute(
                        t.articles.insert().values(
                            newsletter=newsletter, first_seen=now, last_seen=now, **values
                        )
                    )
                    new += 1
                    continue
                # The first source that carried an article keeps it; another feed
                # carrying the same item is not a change.
                values.pop("source")
                differs = any(getattr(row, k) != v for k, v in values.items())
                values = values if differs else {}
                conn.execute(
                    t.articles.update()
                    .where(t.articles.c.id == row.id)
                    .values(last_seen=now, **values)
                )
                changed += differs
        return new, changed

    def window_articles(
        self, newsletter: str, start: datetime, end: datetime, issue_id: int | None = None
    ) -> list[Article]:
        """Articles published in [start, end) not already in another issue."""
        c = t.articles.c
        free = (
            c.issue_id.is_(None)
            if issue_id is None
            else or_(c.issue_id.is_(None), c.issue_id == issue_id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.articles)
                .where(
                    c.newsletter == newsletter,
                    c.published >= start,
                    c.published < end,
                    free,
                )
                .order_by(c.published.desc(), c.id)
            ).all()
        return [_article_from_row(r) for r in rows]

    def issue_articles(self, issue_id: int) -> list[Article]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.articles)
                .where(t.articles.c.issue_id == issue_id)
                .order_by(t.articles.c.published.desc(), t.articles.c.id)
            ).all()
        return [_article_from_row(r) for r in rows]

    def count_articles(self, newsletter: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(t.articles)
                    .where(t.articles.c.newsletter == newsletter)
                ).scalar_one()
            )

    # --- issues --------------------------------------------------------------------------

    def get_issue(self, newsletter: str, key: str) -> IssueRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.issues).where(t.issues.c.newsletter == newsletter, t.issues.c.key == key)
            ).first()
        return _issue_from_row(row) if row else None

    def create_issue(
        self,
        newsletter: str,
        key: str,
        start: datetime,
        end: datetime,
        subject: str,
        article_uids: Sequence[str],
        now: datetime | None = None,
    ) -> IssueRecord:
        """Record an issue and claim its articles, so no later issue carries them again.

        If the issue exists already (a second run for the same week), it is returned
        unchanged.
        """
        try:
            with self.engine.begin() as conn:
                issue_id = conn.execute(
                    t.issues.insert()
                    .values(
                        newsletter=newsletter,
                        key=key,
                        window_start=start,
                        window_end=end,
                        subject=subject,
                        status="composed",
                        created_at=now or utc_now(),
                    )
                    .returning(t.issues.c.id)
                ).scalar_one()
                for begin in range(0, len(article_uids), 500):
                    conn.execute(
                        t.articles.update()
                        .where(
                            t.articles.c.newsletter == newsletter,
                            t.articles.c.uid.in_(article_uids[begin : begin + 500]),
                            t.articles.c.issue_id.is_(None),
                        )
                        .values(issue_id=issue_id)
                    )
        except IntegrityError:
            pass
        issue = self.get_issue(newsletter, key)
        assert issue is not None
        return issue

    def sent_issues(self, newsletter: str) -> list[tuple[IssueRecord, datetime]]:
        """The newsletter's issues that reached at least one reader, newest window first,
        each with the time its first message was recorded as sent (from the ledger)."""
        first_sent = func.min(t.deliveries.c.updated_at).label("first_sent")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.issues, first_sent)
                .join(t.deliveries, t.deliveries.c.issue_id == t.issues.c.id)
                .where(
                    t.issues.c.newsletter == newsletter,
                    t.deliveries.c.state == DeliveryState.SENT,
                )
                .group_by(*t.issues.c)
                .order_by(t.issues.c.window_start.desc(), t.issues.c.id.desc())
            ).all()
        return [(_issue_from_row(row), row.first_sent) for row in rows]

    def update_composed_issue(
        self, issue_id: int, subject: str, article_uids: Sequence[str]
    ) -> bool:
        """Give an issue that has not gone out its articles and subject after an edit.

        The issue claims ``article_uids`` and lets go of its other articles (the editors
        left them out). False, and nothing changed, once the issue has started going out.
        """
        c = t.articles.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.issues)
                .where(t.issues.c.id == issue_id, t.issues.c.status == "composed")
                .values(subject=subject)
            )
            if not done.rowcount:
                return False
            conn.execute(
                update(t.articles)
                .where(c.issue_id == issue_id, c.uid.not_in(list(article_uids) or [""]))
                .values(issue_id=None)
            )
            newsletter = conn.execute(
                select(t.issues.c.newsletter).where(t.issues.c.id == issue_id)
            ).scalar_one()
            for begin in range(0, len(article_uids), 500):
                conn.execute(
                    update(t.articles)
                    .where(
                        c.newsletter == newsletter,
                        c.uid.in_(article_uids[begin : begin + 500]),
                        c.issue_id.is_(None),
                    )
                    .values(issue_id=issue_id)
                )
        return True

    def set_issue_status(self, issue_id: int, status: str, *, sent_at: datetime | None = None,
                         connection: Connection | None = None) -> None:  # fmt: skip
        """Set it, in ``connection``'s transaction (of ``engine.begin()``) when given."""
        values: dict[str, Any] = {"status": status}
        if sent_at is not None:
            values["sent_at"] = sent_at
        statement = t.issues.update().where(t.issues.c.id == issue_id).values(values)
        with transaction(self.engine, connection) as conn:
            conn.execute(statement)

    # --- delivery ledger -----------------------------------------------------------------

    def plan_deliveries(
        self,
        issue_id: int,
        planned: Iterable[tuple[int, str, Sequence[str]]],
        now: datetime | None = None,
    ) -> int:
        """Add a pending ledger row per (subscriber_id, email, segments) not yet planned.

        Rows already in the ledger are left as they are: planning twice never sends twice,
        and two runs planning at once add each row once. Returns the number of rows added.
        """
        now = now or utc_now()
        rows = [
            dict(
                issue_id=issue_id,
                subscriber_id=sid,
                email=email,
                segments=json.dumps(list(segments)),
                state=DeliveryState.PENDING,
                attempts=0,
                updated_at=now,
            )
            for sid, email, segments in planned
        ]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            return insert_ignoring_duplicates(conn, t.deliveries, rows)

    def deliveries(self, issue_id: int, states: Iterable[str] | None = None) -> list[DeliveryRow]:
        query = select(t.deliveries).where(t.deliveries.c.issue_id == issue_id)
        if states is not None:
            query = query.where(t.deliveries.c.state.in_(list(states)))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.deliveries.c.id)).all()
        return [_delivery_from_row(r) for r in rows]

    def iter_deliveries(self, issue_id: int, *, chunk: int = 1000) -> Iterator[list[DeliveryRow]]:
        """The issue's ledger rows in id order, ``chunk`` rows per short query.

        Each chunk starts after the last id read (not at an offset), so a chunk at the end
        of a large ledger costs what the first one does.
        """
        d = t.deliveries.c
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(t.deliveries)
                    .where(d.issue_id == issue_id, d.id > after)
                    .order_by(d.id)
                    .limit(chunk)
                ).all()
            if not rows:
                return
            after = rows[-1].id
            yield [_delivery_from_row(r) for r in rows]

    def record_delivery(
        self,
        delivery_id: int,
        state: str,
        *,
        code: int | None,
        reply: str,
        now: datetime | None = None,
    ) -> None:
        """Record the outcome of one delivery (see :meth:`record_outcomes`)."""
        self.record_outcomes([Outcome(delivery_id, state, code, reply)], now)

    def delivery_counts(self, issue_id: int) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.deliveries.c.state, func.count())
                .where(t.deliveries.c.issue_id == issue_id)
                .group_by(t.deliveries.c.state)
            ).all()
        return {state: int(n) for state, n in rows}


def _article_values(article: Article) -> dict[str, Any]:
    return {
        "uid": article.uid,
        "source": article.source,
        "title": article.title,
        "link": article.link,
        "published": article.published,
        "updated": article.updated,
        "author": article.author,
        "category": article.category,
        "region": article.region,
        "summary": article.summary,
        "content": article.content,
        "image_url": article.image.url if article.image else None,
        "image_alt": article.image.alt if article.image else None,
        "label": article.label,
    }


def _article_from_row(row: Any) -> Article:
    return Article(
        uid=row.uid,
        source=row.source,
        title=row.title,
        link=row.link,
        published=row.published,
        category=row.category,
        region=row.region,
        author=row.author,
        summary=row.summary,
        content=row.content,
        image=Image(row.image_url, row.image_alt or "") if row.image_url else None,
        label=row.label,
        updated=row.updated,
    )


def _delivery_from_row(row: Any) -> DeliveryRow:
    return DeliveryRow(
        row.id,
        row.issue_id,
        row.subscriber_id,
        row.email,
        tuple(json.loads(row.segments)),
        row.state,
        row.message_id,
        row.smtp_code,
        row.smtp_reply,
        row.attempts,
        row.next_attempt_at,
        row.first_attempt_at,
        row.updated_at,
        row.claimed_by,
    )


def _issue_from_row(row: Any) -> IssueRecord:
    return IssueRecord(
        row.id,
        row.newsletter,
        row.key,
        row.window_start,
        row.window_end,
        row.subject,
        row.status,
        row.sent_at,
    )
