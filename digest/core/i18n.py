"""Texts, dates and labels in a newsletter's locale (Babel) and time zone.

Every text a reader sees comes from the gettext catalogues in ``digest/locale/``
(``<language>/LC_MESSAGES/digest.po``). The message ids are English; German is a
translation like any other. A locale without a catalogue gets the English ids.
The ``.po`` files are read at run time, so there is no compiled file to forget.

A reader's own locale (:func:`reader_locale`) is used where we have a catalogue for its
language; any other (a language without a catalogue, a value that is no locale at all)
falls back to the newsletter's, so a reader never gets a mix of two languages.

Every date function takes aware datetimes and shows them in the given zone, so the
same instant reads the same in the subject, the HTML and the text part.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import date, datetime, timedelta
from io import BytesIO
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
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
    "reader_locale",
    "local_date",
    "format_day",
    "format_long_day",
    "format_week",
    "format_window",
]

log = logging.getLogger(__name__)

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


# A plain identifier in any case, "-" or "_": language, optional script and territory.
_LOCALE_ID = re.compile(r"([a-z]{2,3})(?:[_-]([a-z]{4}))?(?:[_-]([a-z]{2}|[0-9]{3}))?", re.I)


def _plain_locale(value: str) -> str | None:
    """``value`` in Babel's spelling (``en-gb`` → ``en_GB``) if Babel knows it, else None.

    Babel's own parser is lenient (``de_DE;rm`` reads as ``de``, ``und`` as ``en_US``):
    the name must be exactly the one Babel gives the locale it finds.
    """
    match = _LOCALE_ID.fullmatch(value)
    if match is None:
        return None
    language, script, territory = match.groups()
    parts = [language.lower(), *([script.title()] if script else [])]
    parts += [territory.upper()] if territory else []
    name = "_".join(parts)
    try:
        parsed = Locale.parse(name)
    except (ValueError, TypeError, UnknownLocaleError):
        return None
    return name if str(parsed) == name else None


@functools.lru_cache(maxsize=256)
def reader_locale(own: str | None, fallback: str) -> str:
    """The locale a reader's texts are in: ``own`` if we can speak it, else ``fallback``.

    ``own`` is what the store holds for the reader (None or empty: none of their own),
    ``fallback`` the newsletter's locale. ``own`` is used, in Babel's spelling (``en-gb``
    becomes ``en_GB``), when a catalogue covers it or its language (``en_GB`` uses
    ``en``); a language without a catalogue (``fr``) or a value Babel does not know gets
    ``fallback``, logged once per value: a stored value never stops a send.
    """
    own = (own or "").strip()
    if not own or own == fallback:
        return fallback
    name = _plain_locale(own)
    if name is None:
        log.warning("reader locale %r is not a locale; using %s", own[:80], fallback)
        return fallback
    # Where neither has a catalogue, both read the English message ids, and the reader's
    # own locale at least formats the dates as they know them.
    if catalogue_path(name) is None and catalogue_path(fallback) is not None:
        log.info("no texts in the language of reader locale %r; using %s", own, fallback)
        return fallback
    return name


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
