"""The editors' changes to an issue: what each action does, checked and recorded.

The web app's editors' area calls :func:`apply_edit`; the store keeps each change with
who made it and when, and refuses changes to an issue that has gone out
(:class:`~digest.core.errors.IssueReadOnly`). Compose takes the stored edits as an input
(:func:`digest.issue.prepare.prepare_issue`), so every preview and the send agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.config import NewsletterSettings
from digest.config.cron import next_runs_of
from digest.core.errors import EditorialError, for_editors
from digest.core.i18n import N_
from digest.core.models import Article, IssueEdits
from digest.issue.compose import arrange, iso_week_window, shorten, window_candidates
from digest.store import Store

__all__ = [
    "ACTIONS",
    "MAX_INTRO",
    "MAX_TEASER",
    "CategoryDraft",
    "apply_edit",
    "coming_week",
    "issue_draft",
]

#: Longest intro text and teaser an editor can write, in characters.
MAX_INTRO = 2000
MAX_TEASER = 1000
ACTIONS = ("exclude", "include", "pin", "unpin", "up", "down", "teaser", "intro")


def coming_week(newsletter: NewsletterSettings, now: datetime) -> str:
    """The key of the issue the next scheduled run sends: the week before that run's."""
    due = next_runs_of(newsletter, now)
    key, _start, _end = iso_week_window(None, newsletter.zone, due)
    return key


@dataclass(frozen=True)
class CategoryDraft:
    """One category of an issue as the editors see it: every candidate in order.

    ``shown`` go out (after the cut to ``max_per_category``) to every reader who may read
    them; ``waiting`` follow for readers whose interests leave room (a reader of one
    region gets that region's articles up to the limit), and for everyone if room were
    made; ``excluded`` were left out by an editor.
    """

    key: str
    title: str
    shown: list[Article]
    waiting: list[Article]
    excluded: list[Article]


def issue_draft(
    store: Store, newsletter: NewsletterSettings, week: str, now: datetime
) -> tuple[list[CategoryDraft], IssueEdits]:
    """Every article of the week's window that the issue may carry, by category."""
    key, start, end = iso_week_window(week, newsletter.zone, now)
    record = store.get_issue(newsletter.id, key)
    if record is not None and record.status != "composed":
        articles = store.issue_articles(record.id)
    else:
        articles = store.window_articles(
            newsletter.id, start, end, issue_id=record.id if record else None
        )
    edits = store.issue_edits(newsletter.id, key)
    candidates = window_candidates(articles, start, end)
    drafts = []
    for category in newsletter.categories:
        found = candidates.get(category.key, [])
        ordered = arrange(found, edits)
        drafts.append(
            CategoryDraft(
                category.key,
                category.title,
                ordered[: newsletter.max_per_category],
                ordered[newsletter.max_per_category :],
                [a for a in found if a.uid in edits.excluded],
            )
        )
    return drafts, edits


def _refused(english: str, text: str, **values: object) -> EditorialError:
    """An edit that cannot be made: ``english`` for the log, ``text`` for the editor."""
    return for_editors(EditorialError(english), text, **values)


def apply_edit(
    store: Store,
    newsletter: NewsletterSettings,
    week: str,
    *,
    action: str,
    uid: str | None,
    text: str | None,
    editor: str,
    now: datetime,
) -> None:
    """Carry out one editor's action on the issue of ``week``; EditorialError if it cannot.

    ``exclude``/``include`` leave an article out or bring it back, ``pin``/``unpin`` put
    it first in its category, ``up``/``down`` move it by one place, ``teaser`` replaces
    its teaser (empty text: the composed one again), ``intro`` sets the intro text.
    """
    key, _start, _end = iso_week_window(week, newsletter.zone, now)
    if action == "intro":
        intro = (text or "").replace("\r\n", "\n").strip()
        if len(intro) > MAX_INTRO:
            raise _refused(
                f"the intro text has more than {MAX_INTRO} characters",
                N_("The intro text has more than %(count)s characters."),
                count=MAX_INTRO,
            )
        store.set_intro(newsletter.id, key, intro, editor=editor, now=now)
        return
    if action not in ACTIONS:
        raise _refused(
            f"unknown action {action!r}",
            N_("This change is not possible (%(action)s)."),
            action=action,
        )
    drafts, edits = issue_draft(store, newsletter, key, now)
    found = next(
        (
            (draft, article)
            for draft in drafts
            for article in (*draft.shown, *draft.waiting, *draft.excluded)
            if article.uid == uid
        ),
        None,
    )
    if found is None:
        raise _refused(
            "this article is not part of the issue (any more)",
            N_("This article is not part of the issue (any more)."),
        )
    draft, article = found
    title = shorten(article.title, 80)

    def edit(name: str, detail: str, **changes: object) -> None:
        store.edit_article(
            newsletter.id,
            key,
            article.uid,
            editor=editor,
            now=now,
            action=name,
            detail=detail,
            **changes,
        )

    if action == "exclude":
        edit("exclude", title, excluded=True, pinned=False)
    elif action == "include":
        edit("include", title, excluded=False)
    elif action == "pin":
        edit("pin", title, pinned=True, excluded=False)
    elif action == "unpin":
        edit("unpin", title, pinned=False)
    elif action == "teaser":
        teaser = " ".join((text or "").split())
        if len(teaser) > MAX_TEASER:
            raise _refused(
                f"the teaser has more than {MAX_TEASER} characters",
                N_("The teaser has more than %(count)s characters."),
                count=MAX_TEASER,
            )
        edit("teaser", f"{title}: {shorten(teaser, 120) or '-'}", teaser=teaser or None)
    else:
        order = _moved(draft, edits, article, action)
        if order is None:
            return  # already first or last: nothing to do
        store.set_ranks(
            newsletter.id,
            key,
            {a.uid: rank for rank, a in enumerate(order)},
            editor=editor,
            now=now,
            moved=article.uid,
            detail=f"{title} ({action})",
        )


def _moved(
    draft: CategoryDraft, edits: IssueEdits, article: Article, action: str
) -> list[Article] | None:
    """The category's order with ``article`` one place up or down; None if it cannot go."""
    order = [*draft.shown, *draft.waiting]
    place = next((i for i, a in enumerate(order) if a.uid == article.uid), None)
    if place is None:
        raise _refused(
            "an article left out has no place to move from",
            N_("An article that is left out cannot be moved; bring it back first."),
        )
    other = place - 1 if action == "up" else place + 1
    if not 0 <= other < len(order):
        return None
    pinned = edits.pinned
    if (article.uid in pinned) != (order[other].uid in pinned):
        raise _refused(
            "pinned articles stay before the others; unpin it first",
            N_("Pinned articles stay before the others; unpin it first."),
        )
    order[place], order[other] = order[other], order[place]
    return order
