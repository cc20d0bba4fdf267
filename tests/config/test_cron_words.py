"""A schedule in words, in German and English, and the expressions left as written."""

from __future__ import annotations

import pytest

from digest.config.cron import cron_problem
from digest.config.cron_words import schedule_words


@pytest.mark.parametrize(
    ("expression", "german", "english"),
    [
        ("0 7 * * mon", "montags um 07:00", "Mondays at 07:00"),
        ("0 7 * * 1", "montags um 07:00", "Mondays at 07:00"),
        ("0 7 * * 0", "sonntags um 07:00", "Sundays at 07:00"),
        ("0 7 * * 7", "sonntags um 07:00", "Sundays at 07:00"),
        ("30 6 * * mon,thu", "montags und donnerstags um 06:30", "Mondays and Thursdays at 06:30"),
        ("0 9 * * sat,sun", "samstags und sonntags um 09:00", "Saturdays and Sundays at 09:00"),
        ("0 7 * * mon-fri", "Montag bis Freitag um 07:00", "Monday to Friday at 07:00"),
        ("0 7 * * 1-5", "Montag bis Freitag um 07:00", "Monday to Friday at 07:00"),
        ("0 7 * * 5-7", "Freitag bis Sonntag um 07:00", "Friday to Sunday at 07:00"),
        ("0 7 * * *", "täglich um 07:00", "daily at 07:00"),
        ("0 7 * * 0-6", "täglich um 07:00", "daily at 07:00"),
        ("0 7,18 * * *", "täglich um 07:00 und 18:00", "daily at 07:00 and 18:00"),
        ("0 8 1 * *", "am 1. jedes Monats um 08:00", "on day 1 of every month at 08:00"),
        ("15 23 28 * *", "am 28. jedes Monats um 23:15", "on day 28 of every month at 23:15"),
    ],
)
def test_shapes_digest_allows_are_said_in_words(expression: str, german: str, english: str) -> None:
    assert cron_problem(expression) is None  # a schedule the configuration accepts
    assert schedule_words(expression, "de_DE") == german
    assert schedule_words(expression, "en_GB") == english


def test_times_follow_the_locale() -> None:
    # CLDR puts a narrow no-break space before "PM".
    assert schedule_words("0 18 * * fri", "en_US") == "Fridays at 6:00\u202fPM"
    assert schedule_words("0 18 * * fri", "de_DE") == "freitags um 18:00"


@pytest.mark.parametrize(
    "expression",
    [
        "*/15 * * * *",  # every quarter of an hour
        "0 * * * mon",  # every hour
        "0 7-9 * * mon",  # a range of hours
        "0 6,9,12,15,18 * * *",  # more times a day than read at a glance
        "0 7 * 1 mon",  # in January only
        "0 7 1,15 * *",  # two days of the month
        "0 7 * * mon/2",  # a step of weekdays
        "0 7 L * *",  # not crontab(5) at all
        "0 7 * *",  # four fields
    ],
)
def test_other_shapes_are_shown_as_written(expression: str) -> None:
    assert schedule_words(expression, "de_DE") == expression
    assert schedule_words(expression, "en_GB") == expression


def test_crontab_shorthands_are_said_like_their_expansion() -> None:
    assert schedule_words("@weekly", "de_DE") == "sonntags um 00:00"
    assert schedule_words("@daily", "en_GB") == "daily at 00:00"
    assert schedule_words("@hourly", "de_DE") == "@hourly"
