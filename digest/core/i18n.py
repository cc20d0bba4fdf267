"""Texts, dates and labels in a newsletter's locale (Babel) and time zone.

Every text a reader sees comes from the gettext catalogues in ``digest/locale/``
(``<language>/LC_MESSAGES/digest.po``). The message ids are English; German is a
translation like any other. A locale without a catalogue gets the English ids.
The ``.po`` files are read at run time, so there is no compiled file to forget.

Every date function takes aware datetimes and shows them in the given zone, so the
same instant reads the same in the subject, the HTML and the text part.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

__all__ = [
    "DOMAIN",
    "LOCALE_DIR",
    "N_",
    "translations",
    "catalogue_path",
    "language",
    "local_date",
    "format_day",
    "format_long_day",
    "format_week",
    "format_window",
]

#: The gettext domain, and the name of every catalogue file.
DOMAIN = "digest"
#: One folder per locale or language, e.g. ``de/LC_MESSAGES/digest.po``.
LOCALE_DIR = Path(__file__).resolve().parent.parent / "locale"


def N_(message: str) -> str:
    """Mark ``message`` for extraction; it is translated where it is shown."""
    return message


def catalogue_path(locale: str) -> Path | None:
    """The catalogue for ``locale``: its own (``en_GB``), else its language's (``en``)."""
    parsed = Locale.parse(locale)
    for name in dict.fromkeys((str(parsed), parsed.language)):
        path = LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.po"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=32)
def translations(locale: str) -> NullTranslations:
    """The translations for ``locale``; without a catalogue, the English message ids.

    Fuzzy entries are left out, as ``msgfmt`` does: a guess is never shown to a reader.
    """
    path = catalogue_path(locale)
    if path is None:
        return NullTranslations()
    with path.open("rb") as po:
        catalogue = read_po(po, locale=Locale.parse(locale), domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


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
    # TRANSLATORS: an ISO calendar week, e.g. "Week 5/2025"; Babel has no word for it.
    return translations(locale).gettext("Week %(week)s/%(year)s") % {"week": week, "year": year}


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
