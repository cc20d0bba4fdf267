"""The figures pages of the editors' area: how an issue did, how a newsletter's readers
change, each as tables, a chart (SVG, with a text alternative) and a CSV file.

- ``GET /admin/{newsletter}/figures`` (and ``figures.csv``): readers week by week over
  the last year, and the newsletter's issues with links to their figures;
- ``GET /admin/{newsletter}/{week}/figures`` (and ``figures.csv``): one issue's
  deliveries, the unsubscribes that followed it, clicks per article and per category.

Counts only: nothing on these pages names a reader (see :mod:`.figures`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from babel.numbers import format_decimal
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.config import NewsletterSettings
from digest.core.i18n import format_day
from digest.web.admin.charts import bar_chart, line_chart
from digest.web.admin.figures import (
    IssueFigures,
    WeekRow,
    issue_csv,
    issue_figures,
    reader_weeks,
    weeks_csv,
)
from digest.web.admin.session import PREFIX, admin_page, catalogue, guarded, newsletter_of, now
from digest.web.pages import not_found, settings_of, store_of
from digest.web.routing import page

__all__ = ["insight_routes"]

#: Articles drawn in an issue's chart (the table has them all).
CHART_ARTICLES = 10
#: Issues listed on a newsletter's figures page.
ISSUES_LISTED = 20


def _number(request: Request) -> Callable[[int], str]:
    locale = settings_of(request).locale

    def number(value: int) -> str:
        return str(format_decimal(value, locale=locale))

    return number


def _csv_response(text: str, filename: str) -> Response:
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _issue(request: Request) -> tuple[NewsletterSettings, IssueFigures] | None:
    newsletter = newsletter_of(request)
    if newsletter is None:
        return None
    store = store_of(request)
    record = store.get_issue(newsletter.id, request.path_params["week"])
    if record is None:
        return None
    return newsletter, issue_figures(store, newsletter, record)


def _issue_charts(request: Request, figures: IssueFigures) -> dict[str, Markup]:
    _ = catalogue(request).gettext
    number = _number(request)
    shown = [a for a in figures.articles if a.reads][:CHART_ARTICLES]
    article_words = "; ".join(f"{a.title}: {number(a.reads)}" for a in shown)
    category_words = "; ".join(f"{c.title}: {number(c.reads)}" for c in figures.categories)
    return {
        "articles": bar_chart(
            _("Clicks per article"),
            _("The most read articles and their clicks: %(list)s.")
            % {"list": article_words or _("none yet")},
            [(a.title, a.reads) for a in shown],
            [number(a.reads) for a in shown],
        ),
        "categories": bar_chart(
            _("Clicks per category"),
            _("Clicks per category: %(list)s.") % {"list": category_words or _("none yet")},
            [(c.title, c.reads) for c in figures.categories],
            [number(c.reads) for c in figures.categories],
        ),
    }


def show_issue_figures(request: Request) -> Response:
    """``GET /admin/{newsletter}/{week}/figures``: one issue's figures."""
    found = _issue(request)
    if found is None:
        return not_found(request)
    newsletter, figures = found
    record = figures.record
    sent_at = record.sent_at
    return admin_page(
        request,
        "admin/insight_issue.html",
        title=catalogue(request).gettext("Figures of issue %(week)s") % {"week": record.key},
        newsletter=newsletter,
        figures=figures,
        week=record.key,
        sent_on=format_day(sent_at, settings_of(request).locale, newsletter.zone)
        if sent_at
        else "",
        charts=_issue_charts(request, figures),
        number=_number(request),
    )


def issue_figures_csv(request: Request) -> Response:
    """``GET /admin/{newsletter}/{week}/figures.csv``."""
    found = _issue(request)
    if found is None:
        return not_found(request)
    newsletter, figures = found
    text = issue_csv(figures, catalogue(request).gettext, settings_of(request).locale)
    return _csv_response(text, f"{newsletter.id}-{figures.record.key}.csv")


def _weeks_chart(request: Request, rows: list[WeekRow]) -> Markup:
    _ = catalogue(request).gettext
    number = _number(request)
    series = [
        (_("Joined"), [r.joined for r in rows]),
        (_("Confirmed"), [r.confirmed for r in rows]),
        (_("Left"), [r.left for r in rows]),
        (_("Bounced"), [r.bounced for r in rows]),
    ]
    totals = "; ".join(f"{name}: {number(sum(values))}" for name, values in series)
    busiest = max(rows, key=lambda r: r.joined + r.confirmed + r.left + r.bounced)
    return line_chart(
        _("Readers per week"),
        _(
            "Readers per week, %(weeks)s. In total: %(totals)s. "
            "The busiest week was %(busiest)s. Every week is in the table below."
        )
        % {
            "weeks": f"{rows[0].label} – {rows[-1].label}",
            "totals": totals,
            "busiest": busiest.label,
        },
        [r.label for r in rows],
        series,
    )


def _issues(request: Request, newsletter: NewsletterSettings) -> list[dict[str, Any]]:
    store = store_of(request)
    listed = store.issues_of(newsletter.id, limit=ISSUES_LISTED)
    reads = store.issue_reads([row.id for row, _counts in listed])
    locale = settings_of(request).locale
    return [
        {
            "key": row.key,
            "subject": row.subject,
            "sent_on": format_day(row.sent_at, locale, newsletter.zone) if row.sent_at else "",
            "sent": counts.get("sent", 0),
            "reads": reads.get(row.id, 0),
        }
        for row, counts in listed
    ]


def show_newsletter_figures(request: Request) -> Response:
    """``GET /admin/{newsletter}/figures``: readers per week, and the issues."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    rows = reader_weeks(store_of(request), newsletter, now())
    return admin_page(
        request,
        "admin/insight_newsletter.html",
        title=catalogue(request).gettext("Figures of %(name)s") % {"name": newsletter.name},
        newsletter=newsletter,
        weeks=list(reversed(rows)),  # the newest first in the table
        chart=_weeks_chart(request, rows),
        issues=_issues(request, newsletter),
        number=_number(request),
    )


def newsletter_figures_csv(request: Request) -> Response:
    """``GET /admin/{newsletter}/figures.csv``."""
    newsletter = newsletter_of(request)
    if newsletter is None:
        return not_found(request)
    rows = reader_weeks(store_of(request), newsletter, now())
    text = weeks_csv(rows, catalogue(request).gettext, settings_of(request).locale)
    return _csv_response(text, f"{newsletter.id}-readers.csv")


def insight_routes() -> list[Route]:
    """The figures pages; before ``/admin/{newsletter}/{week}``, which would take
    ``figures`` for a week."""
    return [
        page(
            f"{PREFIX}/{{newsletter}}/figures",
            show=guarded(show_newsletter_figures),
            name="admin_newsletter_figures",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/figures.csv",
            show=guarded(newsletter_figures_csv),
            name="admin_newsletter_figures_csv",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/figures",
            show=guarded(show_issue_figures),
            name="admin_issue_figures",
        ),
        page(
            f"{PREFIX}/{{newsletter}}/{{week}}/figures.csv",
            show=guarded(issue_figures_csv),
            name="admin_issue_figures_csv",
        ),
    ]
