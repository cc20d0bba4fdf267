"""A newsletter's ``schedule`` in words, for people: "montags um 07:00", "Mondays at 07:00".

The shapes a weekly or monthly newsletter uses are said in words, in the catalogue of
the locale: fixed minutes and hours (a few times a day at most), every day or some
weekdays (listed, or a run of them such as ``mon-fri``), or one day of the month, every
month. Any other expression (steps, ranges of hours, chosen months) is shown as written:
a plain crontab line is better than words that say something else.
"""

from __future__ import annotations

from datetime import time

from babel import Locale
from babel.dates import format_time
from babel.lists import format_list

from digest.core.i18n import N_, translations

__all__ = ["schedule_words"]

#: Day names of crontab, Monday first (the order days are listed in).
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: "On Mondays" and so on, as a schedule says it.
_ON_DAYS = (
    N_("Mondays"),
    N_("Tuesdays"),
    N_("Wednesdays"),
    N_("Thursdays"),
    N_("Fridays"),
    N_("Saturdays"),
    N_("Sundays"),
)
#: The shorthands crontab knows, as five fields; "@hourly" and "@yearly" have no words.
_ALIASES = {
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}
#: More times a day than this are no longer read at a glance: shown as written.
_MOST_TIMES = 4


def schedule_words(expression: str, locale: str) -> str:
    """``expression`` in words in ``locale``; the expression itself where words would not fit."""
    fields = _ALIASES.get(expression.strip().lower(), expression).split()
    if len(fields) != 5:
        return expression
    minute, hour, day, month, weekday = fields
    times = _times(minute, hour)
    if times is None or month != "*":
        return expression
    gettext = translations(locale).gettext
    said = format_list([format_time(t, "short", locale=locale) for t in times], locale=locale)
    if day != "*":
        if weekday != "*" or not day.isdigit() or not 1 <= int(day) <= 31:
            return expression
        # TRANSLATORS: a schedule, e.g. "on day 1 of every month at 07:00".
        return gettext("on day %(day)s of every month at %(time)s") % {
            "day": int(day),
            "time": said,
        }
    days = _weekdays(weekday)
    if days is None:
        return expression
    if len(days) == len(_DAYS):
        # TRANSLATORS: a schedule, e.g. "daily at 07:00".
        return gettext("daily at %(time)s") % {"time": said}
    if len(days) >= 3 and days == list(range(days[0], days[-1] + 1)):
        names = Locale.parse(locale).days["format"]["wide"]
        # TRANSLATORS: a schedule, e.g. "Monday to Friday at 07:00".
        return gettext("%(first)s to %(last)s at %(time)s") % {
            "first": names[days[0]],
            "last": names[days[-1]],
            "time": said,
        }
    on_days = format_list([gettext(_ON_DAYS[d]) for d in days], locale=locale)
    # TRANSLATORS: a schedule, e.g. "Mondays and Thursdays at 07:00".
    return gettext("%(days)s at %(time)s") % {"days": on_days, "time": said}


def _numbers(field: str, highest: int) -> list[int] | None:
    """The values of a field of plain numbers (``7`` or ``7,12``), or None."""
    parts = field.split(",")
    if not all(p.isdigit() and int(p) <= highest for p in parts):
        return None
    return sorted({int(p) for p in parts})


def _times(minute: str, hour: str) -> list[time] | None:
    """The times of day a minute and an hour field name, if there are a few of them."""
    minutes, hours = _numbers(minute, 59), _numbers(hour, 23)
    if minutes is None or hours is None or len(minutes) * len(hours) > _MOST_TIMES:
        return None
    return [time(h, m) for h in hours for m in minutes]


def _day(token: str) -> int | None:
    """A weekday, Monday 0, from a crontab name or number (0 and 7 are Sunday)."""
    if token.isdigit():
        return (int(token) - 1) % 7 if int(token) <= 7 else None
    name = token.lower()
    return _DAYS.index(name) if name in _DAYS else None


def _weekdays(field: str) -> list[int] | None:
    """The weekdays a weekday field names, Monday first, or None for shapes not said."""
    if field == "*":
        return list(range(len(_DAYS)))
    days: set[int] = set()
    for token in field.split(","):
        first_text, dash, last_text = token.partition("-")
        first = _day(first_text)
        last = _day(last_text) if dash else first
        if first is None or last is None:
            return None
        if dash and first_text.isdigit() and last_text.isdigit():
            # Numbered ranges count Sunday as 0: "0-2" is Sunday to Tuesday.
            numbers = range(int(first_text), int(last_text) + 1)
            if not numbers:
                return None
            days.update((n - 1) % 7 for n in numbers)
        elif first <= last:
            days.update(range(first, last + 1))
        else:
            return None
    return sorted(days)
