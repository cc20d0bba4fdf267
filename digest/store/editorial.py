"""Editors, their sessions, and their edits and approvals of issues.

Mixed into :class:`~digest.store.Store`. Edits are keyed by (newsletter, week, article
uid): the coming issue has no row in ``issues`` until it is composed for sending. Every
change checks, in its own transaction, that the issue has not started going out: a
sent issue is read-only (:class:`~digest.core.errors.IssueReadOnly`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError

from digest.core.errors import EditorialError, IssueReadOnly
from digest.core.models import IssueEdits
from digest.store import schema as t
from digest.store.sql import transaction

__all__ = ["ADMIN", "EDITOR", "ROLES", "Approval", "EditorialStore", "Editor", "HistoryEntry"]

#: Issue states in which editors may still change an issue.
EDITABLE = ("composed",)

#: Edits and approves issues.
EDITOR = "editor"
#: Also sees readers' personal data and handles their requests (export, unsubscribe, erase).
ADMIN = "admin"
ROLES = (EDITOR, ADMIN)


@dataclass(frozen=True)
class Editor:
    """An account of the editors' area."""

    id: int
    name: str
    email: str
    password_hash: str
    created_at: datetime
    role: str = EDITOR

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True)
class HistoryEntry:
    """One change to an issue: who, when, what."""

    editor: str
    created_at: datetime
    action: str
    article_uid: str | None
    detail: str


@dataclass(frozen=True)
class Approval:
    """An issue's approval, and when the editors were asked for it."""

    approved_by: str | None
    approved_at: datetime | None
    review_mailed_at: datetime | None
    intro_by: str | None = None
    intro_at: datetime | None = None


def _editor(row: Any) -> Editor:
    return Editor(row.id, row.name, row.email, row.password_hash, row.created_at, row.role)


class EditorialStore:
    engine: Engine

    # --- accounts --------------------------------------------------------------------------

    def add_editor(
        self, name: str, email: str, password_hash: str, now: datetime, role: str = EDITOR
    ) -> Editor:
        """A new account; EditorialError if the name is taken."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.editors.insert().values(
                        name=name,
                        email=email,
                        password_hash=password_hash,
                        created_at=now,
                        role=role,
                    )
                )
        except IntegrityError:
            raise EditorialError(f"there is already an editor named {name!r}") from None
        found = self.editor_by_name(name)
        assert found is not None
        return found

    def editors(self) -> list[Editor]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.editors).order_by(t.editors.c.name)).all()
        return [_editor(r) for r in rows]

    def editor_by_name(self, name: str) -> Editor | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.editors).where(t.editors.c.name == name)).first()
        return _editor(row) if row else None

    def set_password_hash(self, editor_id: int, password_hash: str) -> None:
        """Store a rehashed password (argon2 parameters raised since it was set)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.editors)
                .where(t.editors.c.id == editor_id)
                .values(password_hash=password_hash)
            )

    def set_editor_role(self, name: str, role: str) -> bool:
        """Give the account ``name`` the role ``role``; False if there is none by that name.

        The role is read with the session on every request: it holds from the next page
        on, also in sessions already open.
        """
        with self.engine.begin() as conn:
            done = conn.execute(update(t.editors).where(t.editors.c.name == name).values(role=role))
        return bool(done.rowcount)

    def remove_editor(self, name: str) -> bool:
        """Delete an account and end its sessions; False if there is none by that name."""
        with self.engine.begin() as conn:
            found = conn.execute(
                select(t.editors.c.id).where(t.editors.c.name == name)
            ).scalar_one_or_none()
            if found is None:
                return False
            conn.execute(delete(t.editor_sessions).where(t.editor_sessions.c.editor_id == found))
            conn.execute(delete(t.editors).where(t.editors.c.id == found))
        return True

    # --- sessions --------------------------------------------------------------------------

    def start_session(
        self, editor_id: int, token_hash: str, now: datetime, expires_at: datetime
    ) -> None:
        with self.engine.begin() as conn:
            # Expired sessions are of no use to anyone: drop them on every login.
            conn.execute(delete(t.editor_sessions).where(t.editor_sessions.c.expires_at <= now))
            conn.execute(
                t.editor_sessions.insert().values(
                    token_hash=token_hash,
                    editor_id=editor_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def session_editor(self, token_hash: str, now: datetime) -> Editor | None:
        """The editor of a session that has not expired, else None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.editors)
                .join(t.editor_sessions, t.editor_sessions.c.editor_id == t.editors.c.id)
                .where(
                    t.editor_sessions.c.token_hash == token_hash,
                    t.editor_sessions.c.expires_at > now,
                )
            ).first()
        return _editor(row) if row else None

    def end_session(self, token_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(t.editor_sessions).where(t.editor_sessions.c.token_hash == token_hash)
            )

    # --- edits -----------------------------------------------------------------------------

    def issue_edits(self, newsletter: str, week: str) -> IssueEdits:
        """Everything the editors changed in one issue (no edits: an empty IssueEdits)."""
        c = t.article_edits.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.article_edits).where(c.newsletter == newsletter, c.week == week)
            ).all()
            intro = conn.execute(
                select(t.issue_reviews.c.intro).where(
                    t.issue_reviews.c.newsletter == newsletter, t.issue_reviews.c.week == week
                )
            ).scalar_one_or_none()
        return IssueEdits(
            intro=intro or "",
            excluded=frozenset(r.article_uid for r in rows if r.excluded),
            pinned=frozenset(r.article_uid for r in rows if r.pinned),
            ranks={r.article_uid: r.rank for r in rows if r.rank is not None},
            teasers={r.article_uid: r.teaser for r in rows if r.teaser},
        )

    def edit_article(
        self,
        newsletter: str,
        week: str,
        uid: str,
        *,
        editor: str,
        now: datetime,
        action: str,
        detail: str,
        **changes: Any,
    ) -> None:
        """Change one article's edit (``excluded``, ``pinned``, ``rank``, ``teaser``)."""
        with self.engine.begin() as conn:
            _check_editable(conn, newsletter, week)
            _upsert_edit(conn, newsletter, week, uid, editor, now, changes)
            _log(conn, newsletter, week, uid, action, detail, editor, now)

    def set_ranks(
        self,
        newsletter: str,
        week: str,
        ranks: Mapping[str, int],
        *,
        editor: str,
        now: datetime,
        moved: str,
        detail: str,
    ) -> None:
        """Place a category's articles in one go (a move up or down)."""
        with self.engine.begin() as conn:
            _check_editable(conn, newsletter, week)
            for uid, rank in ranks.items():
                _upsert_edit(conn, newsletter, week, uid, editor, now, {"rank": rank})
            _log(conn, newsletter, week, moved, "move", detail, editor, now)

    def set_intro(
        self, newsletter: str, week: str, text: str, *, editor: str, now: datetime
    ) -> None:
        with self.engine.begin() as conn:
            _check_editable(conn, newsletter, week)
            _review_row(conn, newsletter, week)
            conn.execute(
                _review_where(update(t.issue_reviews), newsletter, week).values(
                    intro=text, intro_by=editor, intro_at=now
                )
            )
            _log(conn, newsletter, week, None, "intro", text[:200], editor, now)

    def approve(
        self,
        newsletter: str,
        week: str,
        *,
        editor: str,
        now: datetime,
        connection: Connection | None = None,
    ) -> bool:
        """Approve an issue; False if it was approved before (the first approval stays).

        With ``connection`` the approval is written in the caller's transaction, and is
        recorded only if that commits.
        """
        with transaction(self.engine, connection) as conn:
            _check_editable(conn, newsletter, week)
            _review_row(conn, newsletter, week)
            done = conn.execute(
                _review_where(update(t.issue_reviews), newsletter, week)
                .where(t.issue_reviews.c.approved_at.is_(None))
                .values(approved_by=editor, approved_at=now)
            )
            if done.rowcount:
                _log(conn, newsletter, week, None, "approve", "", editor, now)
        return bool(done.rowcount)

    def approval(self, newsletter: str, week: str) -> Approval | None:
        with self.engine.connect() as conn:
            row = conn.execute(_review_where(select(t.issue_reviews), newsletter, week)).first()
        if row is None:
            return None
        return Approval(
            row.approved_by, row.approved_at, row.review_mailed_at, row.intro_by, row.intro_at
        )

    def claim_review_mail(self, newsletter: str, week: str, now: datetime) -> bool:
        """True once per issue: the caller then mails the editors, nobody else does."""
        with self.engine.begin() as conn:
            _review_row(conn, newsletter, week)
            done = conn.execute(
                _review_where(update(t.issue_reviews), newsletter, week)
                .where(t.issue_reviews.c.review_mailed_at.is_(None))
                .values(review_mailed_at=now)
            )
        return bool(done.rowcount)

    def release_review_mail(self, newsletter: str, week: str) -> None:
        """Undo :meth:`claim_review_mail` after the mail could not be sent."""
        with self.engine.begin() as conn:
            conn.execute(
                _review_where(update(t.issue_reviews), newsletter, week).values(
                    review_mailed_at=None
                )
            )

    def edit_history(self, newsletter: str, week: str, limit: int = 20) -> list[HistoryEntry]:
        """The newest changes to an issue first."""
        c = t.edit_history.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.edit_history)
                .where(c.newsletter == newsletter, c.week == week)
                .order_by(c.id.desc())
                .limit(limit)
            ).all()
        return [
            HistoryEntry(r.editor, r.created_at, r.action, r.article_uid, r.detail) for r in rows
        ]

    def search_subscribers(self, fragment: str, limit: int = 20) -> list[str]:
        """Addresses of active subscribers that contain ``fragment`` (any case)."""
        pattern = (
            "%" + fragment.casefold().replace("\\", "").replace("%", "").replace("_", "") + "%"
        )
        c = t.subscribers.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.email)
                .where(c.status == "active", c.email_key.like(pattern))
                .order_by(c.email_key)
                .limit(limit)
            ).all()
        return [r.email for r in rows]

    def issues_of(self, newsletter: str, limit: int = 10) -> list[Any]:
        """The newsletter's newest issues in the store with their delivery counts by state."""
        with self.engine.connect() as conn:
            issues = conn.execute(
                select(t.issues)
                .where(t.issues.c.newsletter == newsletter)
                .order_by(t.issues.c.key.desc())
                .limit(limit)
            ).all()
            counts = conn.execute(
                select(t.deliveries.c.issue_id, t.deliveries.c.state, func.count())
                .where(t.deliveries.c.issue_id.in_([i.id for i in issues]))
                .group_by(t.deliveries.c.issue_id, t.deliveries.c.state)
            ).all()
        by_issue: dict[int, dict[str, int]] = {}
        for issue_id, state, n in counts:
            by_issue.setdefault(issue_id, {})[state] = int(n)
        return [(row, by_issue.get(row.id, {})) for row in issues]

    def unissued_times(self, newsletter: str, start: datetime, end: datetime) -> list[datetime]:
        """When the articles published in [start, end) that no issue carries were published.

        The weeks they fall in are weeks that may never have gone out (a failed run, a
        week to catch up on); only the times are read, not the articles.
        """
        c = t.articles.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(c.published)
                .where(
                    c.newsletter == newsletter,
                    c.published >= start,
                    c.published < end,
                    c.issue_id.is_(None),
                )
                .distinct()
            ).all()
        return [row.published for row in rows]


def _check_editable(conn: Connection, newsletter: str, week: str) -> None:
    status = conn.execute(
        select(t.issues.c.status).where(t.issues.c.newsletter == newsletter, t.issues.c.key == week)
    ).scalar_one_or_none()
    if status is not None and status not in EDITABLE:
        raise IssueReadOnly(
            f"issue {week} of {newsletter!r} has gone out ({status}) and cannot be changed"
        )


def _review_where(statement: Any, newsletter: str, week: str) -> Any:
    return statement.where(
        t.issue_reviews.c.newsletter == newsletter, t.issue_reviews.c.week == week
    )


def _review_row(conn: Connection, newsletter: str, week: str) -> None:
    from digest.store.sql import insert_ignoring_duplicates

    insert_ignoring_duplicates(
        conn, t.issue_reviews, [{"newsletter": newsletter, "week": week, "intro": ""}]
    )


def _upsert_edit(
    conn: Connection,
    newsletter: str,
    week: str,
    uid: str,
    editor: str,
    now: datetime,
    changes: Mapping[str, Any],
) -> None:
    c = t.article_edits.c
    where = (c.newsletter == newsletter, c.week == week, c.article_uid == uid)
    values = {**changes, "updated_by": editor, "updated_at": now}
    done = conn.execute(update(t.article_edits).where(*where).values(values))
    if not done.rowcount:
        row = {
            "newsletter": newsletter,
            "week": week,
            "article_uid": uid,
            "excluded": False,
            "pinned": False,
            "rank": None,
            "teaser": None,
            **values,
        }
        conn.execute(t.article_edits.insert().values(row))


def _log(
    conn: Connection,
    newsletter: str,
    week: str,
    uid: str | None,
    action: str,
    detail: str,
    editor: str,
    now: datetime,
) -> None:
    conn.execute(
        t.edit_history.insert().values(
            newsletter=newsletter,
            week=week,
            article_uid=uid,
            action=action,
            detail=detail,
            editor=editor,
            created_at=now or datetime.now(UTC),
        )
    )
