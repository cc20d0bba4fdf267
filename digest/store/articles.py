"""What the store already holds about articles a collect run sees again.

Mixed into :class:`~digest.store.Store`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from digest.store import schema as t

__all__ = ["ArticleStore"]

#: Uids looked up in one statement.
_CHUNK = 500


class ArticleStore:
    """Stored articles, looked up by uid."""

    engine: Engine

    def stored_summaries(self, newsletter: str, uids: Sequence[str]) -> dict[str, str]:
        """The stored summary (possibly empty) of each of ``uids`` the newsletter has."""
        found: dict[str, str] = {}
        c = t.articles.c
        with self.engine.connect() as conn:
            for start in range(0, len(uids), _CHUNK):
                chunk = list(uids[start : start + _CHUNK])
                rows = conn.execute(
                    select(c.uid, c.summary).where(c.newsletter == newsletter, c.uid.in_(chunk))
                )
                found.update((uid, summary) for uid, summary in rows)
        return found
