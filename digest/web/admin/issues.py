"""The issues in the editors' area: the overview, one issue's page, its edits and approval.

An approved issue whose week has ended goes out at once when its newsletter says so
(``approved_send = "immediately"``): on one machine after the answer, in the app's
process; in a cluster (``[cluster] queue``) a worker sends it, its job queued in the
approval's own transaction (:func:`~digest.issue.review.record_approval`).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from digest.config import NewsletterSettings, Settings
from digest.config.cron import next_runs_of
from digest.core.errors import DigestError, EditorialError, IssueReadOnly
from digest.core.i18n import N_
from digest.delivery.planning import audience, current_recipients
from digest.issue.compose import iso_week_window, teaser_for
from digest.issue.editing import MAX_INTRO, MAX_TEASER, apply_edit, coming_week, issue_draft
from digest.issue.prepare import prepare_issue
from digest.issue.review import HERE, Approved, record_approval
from digest.ops.approval import send_approved
from digest.store import Store
from digest.web.admin.session import (
    EXPIRED_FORM,
    PREFIX,
    admin_page,
    catalogue,
    error_text,
    genuine,
    newsletter_of,
    now,
    session_editor,
)
from digest.web.admin.words import NOT_SENT, Words
from digest.web.forms import field_text
from digest.web.pages import not_found, settings_of, store_of

__all__ = ["approve", "edit_issue", "overview", "show_issue"]

#: How many past weeks the overview looks at for issues never sent.
PAST_WEEKS = 8

_READ_ONLY = N_("This issue has been sent and can no longer be changed.")


def _newsletter_summary(
    store: Store, newsletter: NewsletterSettings, at: datetime
) -> dict[str, Any]:
    due = next_runs_of(newsletter, at)
    week = coming_week(newsletter, at)
    key, start, end = iso_week_window(week, newsletter.zone, at)
    prepared = prepare_issue(store, newsletter, key, at, save=False)
    segments = {s.name: 0 for s in newsletter.segments}
    nothing = 0
    sections: list[tuple[str, int]] = []
    if prepared is not None:
        record = prepared.record
        plan = audience(
            store,
            newsletter,
            prepared.issue,
            current_recipients(store, newsletter),
            record,
            ledger_open=record is None or record.status == "composed",
        )
        for _row, recipient in plan.to_send:
            for name in recipient.segments:
                segments[name] = segments.get(name, 0) + 1
        nothing = len(plan.nothing_for_them)
        sections = [(s.title, len(s.items)) for s in prepared.issue.sections]
    approval = store.approval(newsletter.id, key)
    return {
        "newsletter": newsletter,
        "due": due.astimezone(newsletter.zone),
        "week": key,
        "start": start.astimezone(newsletter.zone),
        "end": end.astimezone(newsletter.zone),
        "sections": sections,
        "segments": segments,
        "nothing": nothing,
        "approval": approval,
        "last": _past_issues(store, newsletter, start),
    }


def _past_issues(
    store: Store, newsletter: NewsletterSettings, coming: datetime
) -> list[dict[str, Any]]:
    """The newest issues in the store, and the past weeks that never became one.

    A week before the coming issue's (which starts at ``coming``) with articles no issue
    carries, and no issue of its own, was never sent: a run that failed before it
    composed, a week the schedule passed over. The last :data:`PAST_WEEKS` are looked at.
    """
    rows = store.issues_of(newsletter.id, limit=PAST_WEEKS + 4)
    past: list[dict[str, Any]] = [
        {"key": row.key, "status": row.status, "counts": counts} for row, counts in rows
    ]
    first_day = coming.astimezone(newsletter.zone).date() - timedelta(weeks=PAST_WEEKS)
    year, number, _ = first_day.isocalendar()
    _key, since, _end = iso_week_window(f"{year}-W{number:02d}", newsletter.zone, coming)
    known = {row.key for row, _counts in rows}
    unsent = set()
    for published in store.unissued_times(newsletter.id, since, coming):
        year, number, _ = published.astimezone(newsletter.zone).isocalendar()
        unsent.add(f"{year}-W{number:02d}")
    past += [{"key": week, "status": NOT_SENT, "counts": {}} for week in unsent - known]
    past.sort(key=lambda issue: str(issue["key"]), reverse=True)
    return past[:PAST_WEEKS]


def overview(request: Request) -> Response:
    """``GET /admin/``: every newsletter's coming issue and its last ones."""
    at = now()
    store = store_of(request)
    return admin_page(
        request,
        "admin/overview.html",
        title=catalogue(request).gettext("Editors' area"),
        summaries=[_newsletter_summary(store, n, at) for n in settings_of(request).newsletters],
    )


def _issue_page(
    request: Request,
    newsletter: NewsletterSettings,
    week: str,
    status: int = 200,
    error: str = "",
    notice: str = "",
) -> Response:
    store = store_of(request)
    at = now()
    key, start, end = iso_week_window(week, newsletter.zone, at)
    record = store.get_issue(newsletter.id, key)
    drafts, edits = issue_draft(store, newsletter, key, at)

    def teaser(article: Any) -> str:
        return edits.teasers.get(article.uid) or (
            teaser_for(article.summary, newsletter.teaser_length)
            or teaser_for(article.content, newsletter.teaser_length)
        )

    return admin_page(
        request,
        "admin/issue.html",
        status,
        title=catalogue(request).gettext("Issue %(week)s")
        % {"week": Words(settings_of(request).locale).week(key)},
        newsletter=newsletter,
        week=key,
        start=start.astimezone(newsletter.zone),
        end=end.astimezone(newsletter.zone),
        record=record,
        read_only=record is not None and record.status != "composed",
        drafts=drafts,
        edits=edits,
        teaser=teaser,
        history=store.edit_history(newsletter.id, key),
        approval=store.approval(newsletter.id, key),
        ended=end <= at,
        error=error,
        notice=notice,
        max_intro=MAX_INTRO,
        max_teaser=MAX_TEASER,
    )


def show_issue(request: Request) -> Response:
    """``GET /admin/{newsletter}/{week}``: the issue, its edits and its approval."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    notice = ""
    if "approved" in request.query_params:
        notice = catalogue(request).gettext("The issue is approved.")
    return _issue_page(request, newsletter, request.path_params["week"], notice=notice)


async def edit_issue(request: Request) -> Response:
    """``POST /admin/{newsletter}/{week}``: apply one edit, back to the article edited."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    week = request.path_params["week"]
    form = await request.form()
    if not genuine(request, form):
        return await run_in_threadpool(
            _issue_page, request, newsletter, week, 400, catalogue(request).gettext(EXPIRED_FORM)
        )
    editor = session_editor(request)
    uid = field_text(form.get("uid")) if "uid" in form else None
    text = field_text(form.get("text")) if "text" in form else None

    def change() -> Response:
        try:
            apply_edit(
                store_of(request),
                newsletter,
                week,
                action=field_text(form.get("action")),
                uid=uid,
                text=text,
                editor=editor.name,
                now=now(),
            )
        except IssueReadOnly:
            return _issue_page(
                request, newsletter, week, 409, catalogue(request).gettext(_READ_ONLY)
            )
        except EditorialError as exc:
            return _issue_page(request, newsletter, week, 400, error_text(request, exc))
        anchor = (
            f"#a-{hashlib.sha256(uid.encode()).hexdigest()[:12]}" if isinstance(uid, str) else ""
        )
        return RedirectResponse(f"{request.url.path}{anchor}", 303)

    return await run_in_threadpool(change)


async def approve(request: Request) -> Response:
    """``POST /admin/{newsletter}/{week}/approve``: approve the issue (and maybe send it)."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    week = request.path_params["week"]
    page_path = f"{PREFIX}/{newsletter.id}/{week}"
    form = await request.form()
    if not genuine(request, form):
        return await run_in_threadpool(
            _issue_page, request, newsletter, week, 400, catalogue(request).gettext(EXPIRED_FORM)
        )
    editor = session_editor(request)
    settings, store = settings_of(request), store_of(request)
    try:
        approved = await run_in_threadpool(
            lambda: record_approval(settings, store, newsletter, week, editor.name, now=now())
        )
    except IssueReadOnly:
        return await run_in_threadpool(
            _issue_page, request, newsletter, week, 409, catalogue(request).gettext(_READ_ONLY)
        )
    background = None
    if approved.send == HERE:
        background = BackgroundTask(_send_approved, settings, store, newsletter, approved)
    return RedirectResponse(f"{page_path}?approved", 303, background=background)


async def _send_approved(
    settings: Settings, store: Store, newsletter: NewsletterSettings, approved: Approved
) -> None:
    try:
        await send_approved(settings, store, newsletter, approved)
    except DigestError as exc:
        logging.getLogger("digest.web").error(
            "%s %s: send after approval: %s", newsletter.id, approved.week, exc
        )
