"""What the editors' area says about dates, issues and changes, in the area's locale.

Every date is written by Babel for the locale ("5. Dez. 2026, 07:00" in German, "5 Dec
2026, 07:00" in British English), every state and change from the catalogues. What
stands in the store (an issue's ``status``, a change's ``action``) is a code, never shown
as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from gettext import NullTranslations
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import (
    DateTimePattern,
    get_date_format,
    get_datetime_format,
    get_time_format,
    match_skeleton,
    parse_pattern,
)

from digest.config.cron_words import schedule_words
from digest.core.i18n import N_, format_week, translations
from digest.store.editorial import HistoryEntry

__all__ = ["NOT_SENT", "Words"]

#: The state of a past week for which no issue was ever composed.
NOT_SENT = "unsent"

_STATES = {
    "composed": N_("Composed, not sent"),
    "sending": N_("Being sent"),
    "sent": N_("Sent"),
    NOT_SENT: N_("Not sent"),
}
#: Deliveries by state, in the order they are listed.
_DELIVERIES = (
    (("sent",), N_("%(count)s sent")),
    (("pending", "sending"), N_("%(count)s deferred")),
    (("failed",), N_("%(count)s failed")),
    (("skipped",), N_("%(count)s skipped")),
)
#: A change that names one article, by its stored action.
_ARTICLE_CHANGES = {
    "exclude": N_("Left out: %(title)s"),
    "include": N_("Brought back: %(title)s"),
    "pin": N_("Pinned to the top: %(title)s"),
    "unpin": N_("Unpinned: %(title)s"),
    "teaser": N_("Teaser rewritten: %(title)s"),
}
#: A move is stored as "move" with the direction after the title (see issue.editing).
_MOVES = {" (up)": N_("Moved up: %(title)s"), " (down)": N_("Moved down: %(title)s")}


@functools.lru_cache(maxsize=8)
def _patterns(name: str) -> tuple[Locale, DateTimePattern, DateTimePattern, DateTimePattern]:
    """The locale's patterns of a day (its ``yMMMd``), and of a day and time (its medium
    combination of that day and the short time), without and with the zone."""
    locale = Locale.parse(name)
    skeleton = match_skeleton("yMMMd", locale.datetime_skeletons) or "yMMMd"
    day = locale.datetime_skeletons.get(skeleton) or get_date_format("medium", locale=locale)
    clock = get_time_format("short", locale=locale).pattern
    combined = str(get_datetime_format("medium", locale=locale)).replace("{1}", day.pattern)
    return (
        locale,
        day,
        parse_pattern(combined.replace("{0}", clock)),
        parse_pattern(combined.replace("{0}", f"{clock} z")),
    )


@dataclass(frozen=True)
class Words:
    """The words of the editors' area in one locale (the configured one)."""

    locale: str

    @property
    def catalogue(self) -> NullTranslations:
        return translations(self.locale)

    def day(self, value: datetime, zone: ZoneInfo) -> str:
        """A day, e.g. ``5. Dez. 2026``."""
        locale, day, _when, _zoned = _patterns(self.locale)
        return day.apply(value.astimezone(zone), locale)

    def when(self, value: datetime, zone: ZoneInfo, *, with_zone: bool = False) -> str:
        """A day and time, e.g. ``5. Dez. 2026, 07:00`` (``… 07:00 MEZ`` with the zone)."""
        locale, _day, when, zoned = _patterns(self.locale)
        return (zoned if with_zone else when).apply(value.astimezone(zone), locale)

    def week(self, key: str) -> str:
        """An issue's week as people say it, e.g. ``KW 5/2025`` for ``2025-W05``."""
        year, _w, number = key.partition("-W")
        if not (year.isdigit() and number.isdigit()):
            return key
        return format_week(int(year), int(number), self.locale)

    def schedule(self, expression: str) -> str:
        """A newsletter's schedule in words, e.g. ``montags um 07:00``."""
        return schedule_words(expression, self.locale)

    def state(self, status: str) -> str:
        """An issue's state, e.g. ``Verschickt``; an unknown code as it is."""
        found = _STATES.get(status)
        return self.catalogue.gettext(found) if found else status

    def deliveries(self, counts: Mapping[str, int]) -> str:
        """An issue's deliveries, e.g. ``3 verschickt, 1 fehlgeschlagen``."""
        gettext = self.catalogue.gettext
        said = []
        for states, text in _DELIVERIES:
            count = sum(counts.get(state, 0) for state in states)
            if count:
                said.append(gettext(text) % {"count": count})
        return ", ".join(said) or gettext("none")

    def change(self, entry: HistoryEntry) -> str:
        """One change of the history, e.g. ``Weggelassen: <title>``."""
        gettext = self.catalogue.gettext
        detail = entry.detail
        if entry.action in _ARTICLE_CHANGES:
            return gettext(_ARTICLE_CHANGES[entry.action]) % {"title": detail}
        if entry.action == "move":
            for suffix, text in _MOVES.items():
                if detail.endswith(suffix):
                    return gettext(text) % {"title": detail.removesuffix(suffix)}
            return gettext("Moved: %(title)s") % {"title": detail}
        if entry.action == "intro":
            if not detail:
                return gettext("Intro text removed")
            return gettext("Intro text: %(text)s") % {"text": detail}
        if entry.action == "approve":
            return gettext("Issue approved")
        return gettext("Changed: %(detail)s") % {"detail": detail or "–"}
