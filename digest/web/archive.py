"""The public archive's pages: the newsletters with an archive, each one's sent issues,
an issue as it was sent (without anything personal) and an Atom feed.

Nothing here takes a token or shows anything about a reader. A newsletter that does not
exist, has its archive off, and a week that is unknown or was never sent are all the
same 404 page.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.core.i18n import format_long_day
from digest.message.archive import (
    archive_feed,
    archive_page,
    archived_issues,
    archived_newsletter,
    archived_newsletters,
    feed_url,
)
from digest.web.pages import not_found, render, settings_of, store_of
from digest.web.routing import page

__all__ = ["ARCHIVE_PREFIX", "archive_routes", "feed", "index", "issue", "newsletter_issues"]

ARCHIVE_PREFIX = "/archive/"
ATOM = "application/atom+xml; charset=utf-8"


def archive_routes() -> list[Route]:
    """The routes under /archive/."""
    return [
        page(ARCHIVE_PREFIX, show=index, name="archive"),
        page("/archive/{newsletter}/", show=newsletter_issues, name="archive_newsletter"),
        page("/archive/{newsletter}/feed.atom", show=feed, name="archive_feed"),
        page("/archive/{newsletter}/{week}", show=issue, name="archive_issue"),
    ]


def index(request: Request) -> Response:
    """``GET /archive/``: the newsletters with an archive."""
    settings = settings_of(request)
    newsletters = archived_newsletters(settings)
    return render(request, "archive_index.html", locale=settings.locale, newsletters=newsletters)


def newsletter_issues(request: Request) -> Response:
    """``GET /archive/{newsletter}/``: the newsletter's sent issues."""
    settings = settings_of(request)
    newsletter = archived_newsletter(settings, request.path_params["newsletter"])
    if newsletter is None:
        return not_found(request)
    issues = archived_issues(settings, store_of(request), newsletter)
    return render(
        request,
        "archive_newsletter.html",
        locale=newsletter.locale,
        newsletter=newsletter,
        issues=issues,
        feed_url=feed_url(settings, newsletter),
        sent_on=lambda when: format_long_day(when, newsletter.locale, newsletter.zone),
    )


def feed(request: Request) -> Response:
    """``GET /archive/{newsletter}/feed.atom``: the newsletter's sent issues as Atom."""
    settings = settings_of(request)
    newsletter = archived_newsletter(settings, request.path_params["newsletter"])
    if newsletter is None:
        return not_found(request)
    issues = archived_issues(settings, store_of(request), newsletter)
    body = archive_feed(settings, newsletter, issues, datetime.now(UTC))
    return Response(body, media_type=ATOM)


def issue(request: Request) -> Response:
    """``GET /archive/{newsletter}/{week}``: an issue as it was sent."""
    settings = settings_of(request)
    newsletter = archived_newsletter(settings, request.path_params["newsletter"])
    if newsletter is None:
        return not_found(request)
    shown = archive_page(
        settings, store_of(request), newsletter, request.path_params["week"], datetime.now(UTC)
    )
    if shown is None:
        return not_found(request)
    return render(
        request,
        "archive_issue.html",
        locale=newsletter.locale,
        newsletter=newsletter,
        shown=shown,
        feed_url=feed_url(settings, newsletter),
        sent_on=format_long_day(shown.archived.sent_at, newsletter.locale, newsletter.zone),
    )
