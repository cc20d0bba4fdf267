"""The figures editors see of an issue and of a newsletter, and their CSV files.

Read from the store (:mod:`digest.store.insight`, :mod:`digest.store.clicks`): counts
only. An issue's figures are its deliveries (sent, deferred, failed, skipped, bounced,
complaints), the unsubscribes that followed it
(:meth:`~digest.store.insight.InsightStore.unsubscribes_after`) and the clicks per
article and per category. A newsletter's are its readers week by week over the last
year: joined, confirmed, left, bounced
(:meth:`~digest.store.insight.InsightStore.reader_events`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from babel.numbers import get_decimal_symbol

from digest.audience.segments import segment_lists
from digest.config import NewsletterSettings
from digest.core.i18n import N_, format_week
from digest.store import IssueRecord, Store
from digest.store.clicks import ArticleClicks
from digest.store.insight import IssueDeliveries

__all__ = [
    "TOP_ARTICLES",
    "WEEKS",
    "CategoryClicks",
    "IssueFigures",
    "WeekRow",
    "issue_csv",
    "issue_figures",
    "reader_weeks",
    "weeks_csv",
]

#: The articles named as the issue's most read.
TOP_ARTICLES = 5
#: Weeks shown of a newsletter's readers: this one and the 52 before it.
WEEKS = 53


@dataclass(frozen=True)
class CategoryClicks:
    """The clicks on one category's articles in an issue."""

    key: str
    title: str
    articles: int
    mail: int
    web: int
    scanner: int

    @property
    def reads(self) -> int:
        return self.mail + self.web


@dataclass(frozen=True)
class IssueFigures:
    """Everything the page of one issue's figures shows."""

    record: IssueRecord
    deliveries: IssueDeliveries
    articles: list[ArticleClicks]  # the most read first
    categories: list[CategoryClicks]  # in the newsletter's order

    @property
    def top(self) -> list[ArticleClicks]:
        return [a for a in self.articles if a.reads][:TOP_ARTICLES]

    @property
    def reads(self) -> int:
        return sum(a.reads for a in self.articles)

    @property
    def scanner(self) -> int:
        return sum(a.scanner for a in self.articles)


def issue_figures(
    store: Store, newsletter: NewsletterSettings, record: IssueRecord
) -> IssueFigures:
    articles = store.article_clicks(record.id)
    order = {c.key: n for n, c in enumerate(newsletter.categories)}
    keys = sorted({a.category for a in articles}, key=lambda k: (order.get(k, len(order)), k))
    categories = [
        CategoryClicks(
            key=key,
            title=newsletter.category_title(key),
            articles=sum(1 for a in articles if a.category == key),
            mail=sum(a.mail for a in articles if a.category == key),
            web=sum(a.web for a in articles if a.category == key),
            scanner=sum(a.scanner for a in articles if a.category == key),
        )
        for key in keys
    ]
    return IssueFigures(record, store.issue_deliveries(record.id), articles, categories)


@dataclass(frozen=True)
class WeekRow:
    """One week of a newsletter's readers."""

    start: date  # its Monday
    label: str  # "KW 5/2025"
    joined: int
    confirmed: int
    left: int
    bounced: int


def reader_weeks(store: Store, newsletter: NewsletterSettings, now: datetime) -> list[WeekRow]:
    """The newsletter's readers week by week, the :data:`WEEKS` up to ``now``'s, oldest
    first; weeks in the newsletter's time zone, Monday to Sunday."""
    zone = newsletter.zone
    today = now.astimezone(zone).date()
    first = today - timedelta(days=today.weekday(), weeks=WEEKS - 1)
    since = datetime.combine(first, time(0), tzinfo=zone)
    events = store.reader_events(newsletter.id, segment_lists(newsletter), since)
    counts = {event: [0] * WEEKS for event in events}
    for event, times in events.items():
        for at in times:
            week = (at.astimezone(zone).date() - first).days // 7
            if 0 <= week < WEEKS:
                counts[event][week] += 1
    rows = []
    for n in range(WEEKS):
        monday = first + timedelta(weeks=n)
        year, week, _ = monday.isocalendar()
        rows.append(
            WeekRow(
                start=monday,
                label=format_week(year, week, newsletter.locale),
                joined=counts["joined"][n],
                confirmed=counts["confirmed"][n],
                left=counts["left"][n],
                bounced=counts["bounced"][n],
            )
        )
    return rows


# --- CSV ----------------------------------------------------------------------------------

#: What a spreadsheet takes for the start of a formula.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    # A title from a feed must not become a formula when the file is opened.
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _csv(locale: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV file as the locale's spreadsheets read it: ';' where the decimal sign is
    ',' (German), else ','; UTF-8 with a byte order mark."""
    out = io.StringIO()
    delimiter = ";" if get_decimal_symbol(locale) == "," else ","
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return "\ufeff" + out.getvalue()


def issue_csv(figures: IssueFigures, gettext: Callable[[str], str], locale: str) -> str:
    """One row per figure: the deliveries, then each article's clicks by channel."""
    d = figures.deliveries
    rows: list[list[Any]] = [
        [gettext(name), "", "", "", value]
        for name, value in (
            (N_("Sent"), d.sent),
            (N_("Deferred"), d.deferred),
            (N_("Failed"), d.failed),
            (N_("Skipped"), d.skipped),
            (N_("Bounced"), d.bounced),
            (N_("Complaints"), d.complaints),
            (N_("Unsubscribed afterwards"), d.unsubscribes),
        )
    ]
    titles = {c.key: c.title for c in figures.categories}
    for article in figures.articles:
        for name, value in (
            (N_("Clicks in the email"), article.mail),
            (N_("Clicks in the archive"), article.web),
            (N_("Link scanners"), article.scanner),
        ):
            category = titles.get(article.category, article.category)
            rows.append([gettext(name), category, article.title, article.link, value])
    header = [N_("Figure"), N_("Category"), N_("Article"), N_("Link"), N_("Count")]
    return _csv(locale, [gettext(name) for name in header], rows)


def weeks_csv(rows: Sequence[WeekRow], gettext: Callable[[str], str], locale: str) -> str:
    """One row per week: its label, its Monday, and the four counts."""
    header = [N_("Week"), N_("Starts"), N_("Joined"), N_("Confirmed"), N_("Left"), N_("Bounced")]
    return _csv(
        locale,
        [gettext(name) for name in header],
        ([r.label, r.start.isoformat(), r.joined, r.confirmed, r.left, r.bounced] for r in rows),
    )
