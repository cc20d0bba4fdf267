"""Dates and labels in a newsletter's locale (Babel) and time zone.

Every function takes aware datetimes and shows them in the given zone, so the same
instant reads the same in the subject, the HTML and the text part.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date

__all__ = [
    "language",
    "local_date",
    "format_day",
    "format_long_day",
    "format_week",
    "format_window",
]

# Babel has no word for "calendar week"; these are the usual short forms.
_WEEK_LABELS = {
    "de": "KW {week}/{year}",
    "en": "Week {week}/{year}",
}


def language(locale: str) -> str:
    """The language part of a locale, e.g. ``de`` for ``de_DE`` (for ``<html lang>``)."""
    return Locale.parse(locale).language


def local_date(value: date | datetime, zone: ZoneInfo) -> date:
    """The calendar day of ``value`` in ``zone``; naive datetimes are refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: times must be aware")
        return value.astimezone(zone).date()
    return value


def format_day(value: date | datetime, locale: str, zone: ZoneInfo) -> str:
    """A day in the locale's medium form, e.g. ``28.01.2025``."""
    return format_date(local_date(value, zone), "medium", locale=locale)


def format_long_day(value: date | datetime, locale: str, zone: ZoneInfo) -> str:
    """A day in the locale's full form, e.g. ``Donnerstag, 30. Januar 2025``."""
    return format_date(local_date(value, zone), "full", locale=locale)


def format_week(year: int, week: int, locale: str) -> str:
    """An ISO week as readers know it, e.g. ``KW 5/2025``."""
    template = _WEEK_LABELS.get(language(locale), _WEEK_LABELS["en"])
    return template.format(week=week, year=year)


def format_window(start: datetime, end: datetime, locale: str, zone: ZoneInfo) -> str:
    """The days of a half-open window [start, end), e.g. ``27.01.2025 – 02.02.2025``."""
    # The end is exclusive: a window ending Monday 00:00 ends on Sunday.
    last = local_date(end, zone)
    if end.astimezone(zone).time() == datetime.min.time():
        last -= timedelta(days=1)
    first = local_date(start, zone)
    if last <= first:
        return format_day(first, locale, zone)
    return f"{format_day(first, locale, zone)} – {format_day(last, locale, zone)}"
