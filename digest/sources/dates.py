"""Read the dates that listing pages print: "[28.01.2025]", "30. Januar 2025", ISO 8601.

A date without a time zone is read in the newsletter's zone; every result is UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = ["FoundDate", "find_date"]

_MONTHS = {
    "januar": 1,
    "jänner": 1,
    "january": 1,
    "jan": 1,
    "februar": 2,
    "february": 2,
    "feb": 2,
    "märz": 3,
    "maerz": 3,
    "march": 3,
    "mär": 3,
    "mar": 3,
    "april": 4,
    "apr": 4,
    "mai": 5,
    "may": 5,
    "juni": 6,
    "june": 6,
    "jun": 6,
    "juli": 7,
    "july": 7,
    "jul": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sept": 9,
    "sep": 9,
    "oktober": 10,
    "october": 10,
    "okt": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "dezember": 12,
    "december": 12,
    "dez": 12,
    "dec": 12,
}
_ENGLISH = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_MONTH_NAME = "|".join(sorted(_MONTHS, key=len, reverse=True))
_TIME = r"(?:,?\s*(?:um\s+)?(\d{1,2})[:.](\d{2})(?:\s*Uhr)?)?"
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_NUMERIC = re.compile(r"(?<!\d)(\d{1,2})\.\s?(\d{1,2})\.\s?(\d{4})(?!\d)" + _TIME)
_NAMED = re.compile(
    rf"(?<!\d)(\d{{1,2}})\.?\s+({_MONTH_NAME})\.?\s+(\d{{4}})(?!\d)" + _TIME, re.IGNORECASE
)
_NAMED_EN = re.compile(rf"\b({_MONTH_NAME})\.?\s+(\d{{1,2}}),?\s+(\d{{4}})(?!\d)", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class FoundDate:
    """A date read from a text, and the part of the text it was read from."""

    when: datetime
    text: str


def find_date(text: str, zone: ZoneInfo, date_format: str = "") -> FoundDate | None:
    """The date in ``text`` (UTC), read with ``date_format`` if given, else found in it."""
    text = " ".join(text.split())
    if date_format:
        try:
            parsed = datetime.strptime(_english_months(text), date_format)
        except ValueError:
            return None
        return FoundDate(_in_zone(parsed, zone), text)
    candidates: list[tuple[int, FoundDate]] = []
    if (match := _ISO.search(text)) is not None:
        try:
            value = datetime.fromisoformat(match.group().replace(" ", "T"))
            candidates.append((match.start(), FoundDate(_in_zone(value, zone), match.group())))
        except ValueError:
            pass
    # Each pattern with the group numbers of its day, month and year.
    for pattern, (d, m, y) in ((_NUMERIC, (0, 1, 2)), (_NAMED, (0, 1, 2)), (_NAMED_EN, (1, 0, 2))):
        match = pattern.search(text)
        if match is None:
            continue
        groups = match.groups()
        day, month, year = groups[d], groups[m], groups[y]
        month_number = _MONTHS.get(month.casefold()) if not month.isdigit() else int(month)
        hour, minute = (groups[3], groups[4]) if len(groups) > 3 else (None, None)
        try:
            value = datetime(
                int(year), month_number or 0, int(day), int(hour or 0), int(minute or 0)
            )
        except ValueError:
            continue
        candidates.append((match.start(), FoundDate(_in_zone(value, zone), match.group())))
    if not candidates:
        return None
    return min(candidates, key=lambda c: c[0])[1]


def _in_zone(value: datetime, zone: ZoneInfo) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _english_months(text: str) -> str:
    """German month names as English ones, which strptime reads in the C locale."""

    def english(match: re.Match[str]) -> str:
        number = _MONTHS.get(match.group().casefold())
        if number is None:
            return match.group()
        name = _ENGLISH[number - 1]
        return name if len(match.group()) > 3 else name[:3]

    return _WORD.sub(english, text)
