"""Find or make a newsletter's issue for a window, from the articles in the store.

The first time a week is composed its articles are claimed by the issue, so no later
issue carries them again; composing the same week again gives back the same issue. It
claims every article some reader may get: each section's items and its reserve (the
articles past ``max_per_category`` that readers with narrower interests get instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.config import NewsletterSettings
from digest.core.errors import ComposeError
from digest.core.models import Issue
from digest.issue.compose import compose_issue, iso_week_window
from digest.store import IssueRecord, Store

__all__ = ["PreparedIssue", "prepare_issue"]


@dataclass(frozen=True)
class PreparedIssue:
    """An issue with its row in the store (None for a preview of an unsaved issue)."""

    record: IssueRecord | None
    issue: Issue


def prepare_issue(
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    now: datetime,
    *,
    save: bool = True,
) -> PreparedIssue | None:
    """The issue of ``week`` (default: the previous ISO week), created if needed.

    Returns None when the window has no article for a new issue. With ``save=False``
    nothing is written, and an issue not yet in the store comes back without a record
    (for previews and dry runs).

    The editors' changes (:meth:`Store.issue_edits`) are an input of every composition,
    so a preview, a dry run, the archive and the send show the same issue. Until an issue
    starts going out (status ``composed``, e.g. while it awaits approval) it is composed
    again from its window, so an edit made meanwhile holds; from then on it keeps the
    articles it claimed.
    """
    key, start, end = iso_week_window(week, newsletter.zone, now)
    edits = store.issue_edits(newsletter.id, key)
    record = store.get_issue(newsletter.id, key)
    if record is not None:
        editable = record.status == "composed"
        articles = (
            store.window_articles(
                newsletter.id, record.window_start, record.window_end, issue_id=record.id
            )
            if editable
            else store.issue_articles(record.id)
        )
        issue = compose_issue(
            newsletter,
            articles,
            key=key,
            window_start=record.window_start,
            window_end=record.window_end,
            now=now,
            edits=edits,
        )
        if (
            save
            and editable
            and store.update_composed_issue(
                record.id, issue.subject, [a.uid for a in issue.all_articles]
            )
        ):
            record = store.get_issue(newsletter.id, key) or record
        return PreparedIssue(record, issue)
    if save and end > now:
        # Claiming the articles now would freeze the issue: what is published later in
        # the week would then belong to no issue at all.
        local_end = end.astimezone(newsletter.zone)
        raise ComposeError(
            f"week {key} is not over until {local_end:%Y-%m-%d %H:%M} ({newsletter.timezone}); "
            "it can be previewed now and sent once it has ended"
        )
    issue = compose_issue(
        newsletter,
        store.window_articles(newsletter.id, start, end),
        key=key,
        window_start=start,
        window_end=end,
        now=now,
        edits=edits,
    )
    if issue.is_empty:
        return None
    if not save:
        return PreparedIssue(None, issue)
    record = store.create_issue(
        newsletter.id,
        key,
        start,
        end,
        issue.subject,
        [a.uid for a in issue.all_articles],
        now=now,
    )
    return PreparedIssue(record, issue)
