"""The declaration of a setting, and the checks that several sections share.

A :class:`Setting` names one key with its type, default, help text and check; the
sections' modules declare their keys with it, and the loader and the README read them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from digest.core.redact import redact_url

__all__ = ["Setting", "REQUIRED", "parse_locale"]

#: The default of a key that has none: the file must set it.
REQUIRED = object()


@dataclass(frozen=True)
class Setting:
    """One configuration key: its name, expected type, default and what it is for."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None
    #: Its value never appears in a message, a log line or a repr().
    secret: bool = False
    #: The lowest and highest value of a number, both allowed; every number has them.
    bounds: tuple[float, float] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


# An IANA name: "UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5".
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*")
# Files in the zoneinfo folder that are not IANA zones (or depend on the machine).
_NOT_ZONES = {"localtime", "posixrules", "Factory"}


def timezone_problem(value: str) -> str | None:
    known = (
        _ZONE_NAME.fullmatch(value)
        and value not in _NOT_ZONES
        and not value.startswith(("posix/", "right/"))
    )
    try:
        if known:
            ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        known = False
    if not known:
        return f"unknown time zone {quoted(value)} (use an IANA name such as 'Europe/Berlin')"
    return None


# A plain locale identifier: language, optional script, optional territory ("de",
# "de_DE", "zh_Hant_TW", "es_419"); no encoding, modifier or anything after it.
_LOCALE_ID = re.compile(r"[a-z]{2,3}(?:_[A-Z][a-z]{3})?(?:_(?:[A-Z]{2}|[0-9]{3}))?")


def parse_locale(value: str) -> Locale:
    """The Babel locale named by a plain identifier such as ``de_DE``; ValueError if none.

    Babel's own parser is lenient (``'de_DE;rm -rf'`` reads as ``de``): the identifier
    must be exactly the name Babel gives the locale it finds.
    """
    problem = f"unknown locale {quoted(value)} (use an identifier such as 'de_DE' or 'en_GB')"
    if not _LOCALE_ID.fullmatch(value):
        raise ValueError(problem)
    try:
        locale = Locale.parse(value)
    except (UnknownLocaleError, ValueError):
        raise ValueError(problem) from None
    if str(locale) != value:
        raise ValueError(f"{problem[:-1]}; Babel knows it as {str(locale)!r})")
    return locale


def locale_problem(value: str) -> str | None:
    try:
        parse_locale(value)
    except ValueError as exc:
        return str(exc)
    return None


def quoted(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message, shortened if long."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}… ({len(value)} characters)"


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(map(repr, choices))}, not {value!r}"
        return None

    return check


def bounds_text(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]!r} to {bounds[1]!r}"


def out_of_bounds(value: float, bounds: tuple[float, float]) -> str | None:
    """Why a number is outside ``bounds`` (NaN and infinity always are); None if inside."""
    low, high = bounds
    if math.isfinite(value) and low <= value <= high:
        return None
    return f"must be from {bounds_text(bounds)}, not {value!r}"


def string_list(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value):
        return "must be a list of strings"
    return None


def string_table(value: Any) -> str | None:
    if not all(isinstance(v, str) for v in value.values()):
        return "must be a table of strings"
    return None


def type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


def repr_without_passwords(self: Any) -> str:
    """A dataclass's repr() with the password of any URL in it masked."""
    shown = []
    for f in fields(self):
        if f.repr:
            value = getattr(self, f.name)
            shown.append(f"{f.name}={redact_url(value) if isinstance(value, str) else value!r}")
    return f"{type(self).__name__}({', '.join(shown)})"
