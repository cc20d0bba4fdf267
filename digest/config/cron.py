"""Crontab expressions as APScheduler triggers, the check of a newsletter's ``schedule``,
and when each newsletter is next due.

Here rather than in the scheduler so that the settings can check a schedule, and the
editing of an issue can name its due time, without importing the jobs that run it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from digest.core.errors import ConfigError

if TYPE_CHECKING:
    # Only for annotations: the newsletter settings import this module to check a schedule.
    from digest.config.newsletters import NewsletterSettings
    from digest.config.settings import Settings

__all__ = [
    "CRONTAB_NICKNAMES",
    "crontab_fields",
    "crontab_trigger",
    "cron_problem",
    "trigger_for",
    "first_fire_time",
    "next_runs_of",
    "next_runs",
]

_CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: The nicknames crontab(5) knows, with the five fields each stands for.
CRONTAB_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def crontab_fields(expression: str) -> str:
    """The five fields of a crontab expression: a nickname (``@weekly``) spelled out,
    anything else as it is. ``@reboot`` names no time and is a ValueError."""
    name = expression.strip().lower()
    if name == "@reboot":
        raise ValueError("@reboot names no time; digest runs on a schedule of times")
    if name.startswith("@"):
        if name not in CRONTAB_NICKNAMES:
            known = ", ".join(CRONTAB_NICKNAMES)
            raise ValueError(f"unknown nickname {expression.strip()!r} (known: {known})")
        return CRONTAB_NICKNAMES[name]
    return expression


def crontab_trigger(expression: str, zone: ZoneInfo) -> CronTrigger:
    """A trigger for a five-field crontab expression or a nickname (``@weekly``),
    weekdays counted as crontab does."""
    fields = crontab_fields(expression).split()
    if len(fields) == 5:
        fields[4] = _weekday_names(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=zone)


def _weekday_names(field: str) -> str:
    """Crontab weekday numbers (0 and 7 are Sunday) spelled as day names.

    APScheduler 3 counts 0 as Monday, so the numbers must not reach it; names mean the same
    to both. Tokens of names (``mon``, ``mon-fri``) are passed on unchanged.
    """
    if not any(ch.isdigit() for ch in field):
        return field
    names: list[str] = []
    for token in field.split(","):
        body, slash, step_text = token.partition("/")
        if slash and not step_text.isdigit():
            raise ValueError(f"bad step in weekday field {field!r}")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        elif body.isdigit():
            first = int(body)
            last = 7 if slash else first
        elif body.count("-") == 1 and all(p.isdigit() for p in body.split("-")):
            first, last = (int(p) for p in body.split("-"))
        elif not any(ch.isdigit() for ch in body):
            names.append(token)
            continue
        else:
            raise ValueError(f"weekday field {field!r}: use either numbers or day names")
        if not 0 <= first <= last <= 7 or step < 1:
            raise ValueError(
                f"weekday field {field!r}: numbers must be 0-7 (0 and 7 are "
                "Sunday), ranges ascending, steps at least 1"
            )
        for day in range(first, last + 1, step):
            if (name := _CRONTAB_WEEKDAYS[day % 7]) not in names:
                names.append(name)
    return ",".join(names)


def cron_problem(value: str) -> str | None:
    """Why ``value`` is not a schedule digest runs as crontab(5) would; None if it is one."""

    try:
        crontab_trigger(value, ZoneInfo("UTC"))
    except ValueError as exc:
        return f"bad cron expression {value!r}: {exc}"
    # With both day of month and weekday restricted (neither starts with '*'), crontab
    # runs when either matches and APScheduler only when both do. Such an expression is
    # refused rather than run on other days than a reader of crontab(5) expects.
    day, weekday = crontab_fields(value).split()[2::2]
    if not day.startswith("*") and not weekday.startswith("*"):
        return (
            f"{value!r} restricts both day of month ({day!r}) and weekday ({weekday!r}): "
            "crontab runs when either matches, the scheduler only when both do; "
            "restrict one and leave the other '*'"
        )
    return None


def trigger_for(newsletter: NewsletterSettings) -> CronTrigger:
    """The cron trigger of a newsletter's ``schedule``, in its own time zone."""
    return crontab_trigger(newsletter.schedule, ZoneInfo(newsletter.timezone))


def first_fire_time(
    newsletter: NewsletterSettings, trigger: CronTrigger, now: datetime
) -> datetime:
    """The first time ``trigger`` fires at or after ``now``; a ConfigError if it never does."""
    fire_time: datetime | None = trigger.get_next_fire_time(None, now)
    if fire_time is None:
        raise ConfigError(
            f"newsletters.{newsletter.id}.schedule", f"{newsletter.schedule!r} never falls due"
        )
    return fire_time


def next_runs_of(newsletter: NewsletterSettings, now: datetime) -> datetime:
    """The newsletter's next due time at or after ``now``, in its time zone."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return first_fire_time(newsletter, trigger_for(newsletter), now)


def next_runs(settings: Settings, now: datetime) -> list[tuple[NewsletterSettings, datetime]]:
    """Each newsletter's next due time at or after ``now``, in the newsletter's time zone."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return [
        (newsletter, first_fire_time(newsletter, trigger_for(newsletter), now))
        for newsletter in settings.newsletters
    ]
