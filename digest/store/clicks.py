"""Click counts: where a click link leads, and how often each article was opened.

Mixed into :class:`~digest.store.Store`. A click link names an issue and one of its
articles (see :func:`digest.audience.tokens.click_url`); :meth:`ClickStore.click_targets`
says where each of an issue's articles leads, :meth:`ClickStore.add_clicks` adds counts
(``click_counts``: per issue, article, day, channel and kind; nothing about who).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from digest.store import schema as t

__all__ = [
    "READ",
    "SCANNER",
    "ArticleClicks",
    "ClickKey",
    "ClickStore",
    "ClickTarget",
]

#: The kinds of a counted request: a reader's, or one that looked like a link scanner's.
READ = "read"
SCANNER = "scanner"


class ClickKey(NamedTuple):
    """One row of ``click_counts`` without its count."""

    issue_id: int
    article_id: int
    day: date
    channel: str
    kind: str


@dataclass(frozen=True)
class ClickTarget:
    """An article of an issue, as its click link needs it."""

    article_id: int
    uid: str
    link: str


@dataclass(frozen=True)
class ArticleClicks:
    """One article of an issue with its counts (reads per channel, scanner requests)."""

    article_id: int
    title: str
    category: str
    link: str
    mail: int
    web: int
    scanner: int

    @property
    def reads(self) -> int:
        return self.mail + self.web


class ClickStore:
    """The targets of click links and their counts."""

    engine: Engine

    def click_targets(self, newsletter: str, key: str) -> tuple[int, list[ClickTarget]] | None:
        """The id of the issue ``key`` of ``newsletter`` and the articles it carried;
        None if there is no such issue.

        An article belongs to the one issue that claimed it (``articles.issue_id``), so
        an article of another issue, or one the editors left out, is not among them.
        """
        with self.engine.connect() as conn:
            issue_id = conn.execute(
                select(t.issues.c.id).where(
                    t.issues.c.newsletter == newsletter, t.issues.c.key == key
                )
            ).scalar()
            if issue_id is None:
                return None
            c = t.articles.c
            rows = conn.execute(select(c.id, c.uid, c.link).where(c.issue_id == issue_id)).all()
        return int(issue_id), [ClickTarget(int(r.id), r.uid, r.link) for r in rows]

    def add_clicks(self, counts: Mapping[ClickKey, int]) -> None:
        """Add ``counts`` to the stored ones, in one transaction.

        Rows of an issue or article deleted meanwhile are left out.
        """
        # In key order: concurrent writers (web replicas) lock the rows in the same order.
        rows = [{**key._asdict(), "count": n} for key, n in sorted(counts.items()) if n > 0]
        if not rows:
            return
        with self.engine.begin() as conn:
            insert: Any = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
            c = t.click_counts.c
            a = t.articles.c
            alive = {
                (int(row.id), row.issue_id)
                for row in conn.execute(
                    select(a.id, a.issue_id).where(a.id.in_({r["article_id"] for r in rows}))
                )
            }
            rows = [r for r in rows if (r["article_id"], r["issue_id"]) in alive]
            if not rows:
                return
            statement = insert(t.click_counts)
            statement = statement.on_conflict_do_update(
                index_elements=[col.name for col in t.click_counts.primary_key.columns],
                set_={"count": c.count + statement.excluded["count"]},
            )
            conn.execute(statement, rows)

    def article_clicks(self, issue_id: int) -> list[ArticleClicks]:
        """Every article of the issue with its counts, the most read first."""
        c, a = t.click_counts.c, t.articles.c
        with self.engine.connect() as conn:
            sums = conn.execute(
                select(c.article_id, c.channel, c.kind, func.sum(c.count))
                .where(c.issue_id == issue_id)
                .group_by(c.article_id, c.channel, c.kind)
            ).all()
            articles = conn.execute(
                select(a.id, a.title, a.category, a.link)
                .where(a.id.in_({row[0] for row in sums}) | (a.issue_id == issue_id))
                .order_by(a.published.desc(), a.id)
            ).all()
        counted: dict[tuple[int, str], int] = {}
        for article_id, channel, kind, total in sums:
            slot = "scanner" if kind == SCANNER else channel
            counted[article_id, slot] = counted.get((article_id, slot), 0) + int(total or 0)
        found = [
            ArticleClicks(
                article_id=int(row.id),
                title=row.title,
                category=row.category,
                link=row.link,
                mail=counted.get((row.id, "mail"), 0),
                web=counted.get((row.id, "web"), 0),
                scanner=counted.get((row.id, "scanner"), 0),
            )
            for row in articles
        ]
        return sorted(found, key=lambda x: -x.reads)
