"""Mistakes and shorthands in config.toml as an operator meets them: real ``digest``
processes on a copy of the shipped configuration."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import digest
from tests.cli.test_cli import site as site  # the fixture

SCHEDULE = 'schedule = "0 7 * * mon"'


def _edit(site: Path, old: str, new: str) -> None:
    config = site / "config.toml"
    text = config.read_text()
    assert text.count(old) == 1
    config.write_text(text.replace(old, new))


async def test_a_misspelt_key_gets_a_did_you_mean(site: Path) -> None:
    _edit(site, SCHEDULE, SCHEDULE.replace("schedule", "shedule"))
    code, out, err = await digest("schedules", cwd=site)
    assert (code, out) == (2, "")
    assert err == (
        "error: config.toml: newsletters[0].shedule: unknown key (did you mean 'schedule'?)\n"
    )


async def test_a_crontab_nickname_is_a_schedule(site: Path) -> None:
    _edit(site, SCHEDULE, 'schedule = "@weekly"')
    code, out, err = await digest("schedules", cwd=site)
    assert code == 0, err
    assert out.startswith("wochenueberblick: '@weekly' (Europe/Berlin), next run Sun ")
    assert " 00:00 CE" in out
