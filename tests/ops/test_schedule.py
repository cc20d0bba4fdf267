"""The scheduler against a real job store: persistence, missed runs, DST, weekday numbers."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import inspect, select, text

from digest.config import (
    BounceSettings,
    NewsletterSettings,
    Settings,
    UnsubscribeMailboxSettings,
    parse_settings,
)
from digest.ops.schedule import (
    BOUNCE_JOB,
    BOUNCE_JOB_ID,
    COLLECT_JOB,
    DEFAULT_JOB,
    JOB_TABLE,
    MAILBOX_JOB,
    MAILBOX_JOB_ID,
    RETRY_JOB_ID,
    build_scheduler,
    collect_job_id,
    job_id,
    next_runs,
    run_scheduler,
    trigger_for,
)
from digest.store import Store
from tests.conftest import newsletter_table

NEWSLETTER = "wochenueberblick"
JOB_ID = job_id(NEWSLETTER)
RECORD = "tests.ops.test_schedule:record_run"
SLOW = "tests.ops.test_schedule:slow_run"
FAILING = "tests.ops.test_schedule:failing_run"
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

RUNS: list[tuple[str, ...]] = []


async def record_run(config_path: str, newsletter_id: str) -> None:
    RUNS.append((config_path, newsletter_id))


async def slow_run(config_path: str, newsletter_id: str) -> None:
    RUNS.append(("started", newsletter_id))
    await asyncio.sleep(0.3)
    RUNS.append(("finished", newsletter_id))


async def failing_run(config_path: str, newsletter_id: str) -> None:
    raise RuntimeError("no SMTP server")


@pytest.fixture(autouse=True)
def _clear_runs() -> Iterator[None]:
    RUNS.clear()
    yield
    RUNS.clear()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="digest.ops.schedule")
    return caplog


def settings_with(*newsletters: dict[str, Any]) -> Settings:
    return parse_settings(
        {"secret_key": "test-secret-of-16-chars", "newsletters": list(newsletters)}, environ={}
    )


def make_settings(**overrides: Any) -> Settings:
    return settings_with(newsletter_table(**overrides))


def scheduled(schedule: str) -> NewsletterSettings:
    """A newsletter with ``schedule`` as given (the config check counts weekdays 0-6)."""
    return replace(make_settings().newsletters[0], schedule=schedule)


def weekly_at(moment: datetime) -> str:
    """A weekly cron expression that fell due at ``moment`` (a whole minute)."""
    return f"{moment.minute} {moment.hour} * * {WEEKDAYS[moment.weekday()]}"


def minute_ago(delta: timedelta) -> datetime:
    return (datetime.now(UTC) - delta).replace(second=0, microsecond=0)


async def shut_down(scheduler: AsyncIOScheduler) -> None:
    scheduler.shutdown()
    while scheduler.running:  # AsyncIOScheduler.shutdown completes on the event loop
        await asyncio.sleep(0)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def stored_job(settings: Settings, store_url: str, **kwargs: Any) -> Any:
    """The job as a freshly built, paused scheduler finds it in the store."""
    options = {"job": RECORD, "config_path": "config.toml", **kwargs}
    scheduler = build_scheduler(settings, store_url=store_url, **options)
    scheduler.start(paused=True)
    try:
        return scheduler.get_job(JOB_ID)
    finally:
        await shut_down(scheduler)


async def persist_due_time(settings: Settings, store_url: str, due: datetime) -> None:
    """Store the newsletter's job with ``due`` as its next run, as after a long downtime."""
    scheduler = build_scheduler(
        settings, store_url=store_url, job=RECORD, config_path="config.toml"
    )
    scheduler.start(paused=True)
    scheduler.modify_job(JOB_ID, next_run_time=due)
    await shut_down(scheduler)


def messages(logs: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    return [
        r
        for r in logs.records
        if r.name == "digest.ops.schedule" and r.getMessage().startswith(start)
    ]


def due_time(record: logging.LogRecord) -> datetime:
    """The due time a "job ... ran/missed" record reports."""
    assert isinstance(record.args, tuple)
    return datetime.fromisoformat(str(record.args[1]))


# --- persistence -------------------------------------------------------------------------


async def test_persisted_job_survives_a_restart(store_url: str) -> None:
    settings = make_settings()
    first = build_scheduler(
        settings, store_url=store_url, job=RECORD, config_path="/etc/digest/config.toml"
    )
    first.start()
    next_run = first.get_job(JOB_ID).next_run_time
    await shut_down(first)

    job = await stored_job(settings, store_url, config_path="/etc/digest/config.toml")

    assert job.next_run_time == next_run > datetime.now(UTC)
    assert job.func_ref == RECORD
    assert job.args == ("/etc/digest/config.toml", NEWSLETTER)
    assert repr(job.trigger) == repr(trigger_for(settings.newsletters[0]))
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 21600)


async def test_job_table_lives_beside_the_app_tables(store_url: str) -> None:
    Store.open(store_url).close()
    scheduler = build_scheduler(
        make_settings(), store_url=store_url, job=RECORD, config_path="config.toml"
    )
    scheduler.start(paused=True)
    await shut_down(scheduler)

    reopened = Store.open(store_url)  # migrations do not mind the job table
    try:
        tables = set(inspect(reopened.engine).get_table_names())
    finally:
        reopened.close()
    assert {JOB_TABLE, "articles", "deliveries", "alembic_version"} <= tables


async def test_missed_run_fires_once_on_restart(
    store_url: str, logs: pytest.LogCaptureFixture
) -> None:
    latest_due = minute_ago(timedelta(hours=1))  # within the 6 h grace time
    settings = make_settings(schedule=weekly_at(latest_due), timezone="UTC")
    # Down for three weeks: four due times passed, the last one an hour ago.
    await persist_due_time(settings, store_url, latest_due - timedelta(weeks=3))

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(
            settings, store_url=store_url, config_path="config.toml", stop=stop, job=RECORD
        )
    )
    await eventually(lambda: bool(messages(logs, f"job {JOB_ID} ran")))
    stop.set()
    await task

    assert RUNS == [("config.toml", NEWSLETTER)]
    (ran,) = messages(logs, f"job {JOB_ID} ran")
    assert due_time(ran) == latest_due
    job = await stored_job(settings, store_url)
    assert job.next_run_time == latest_due + timedelta(weeks=1)
    assert not messages(logs, f"job {JOB_ID} missed")


async def test_run_missed_by_more_than_the_grace_time_is_skipped(
    store_url: str, logs: pytest.LogCaptureFixture
) -> None:
    latest_due = minute_ago(timedelta(hours=2))
    settings = make_settings(
        schedule=weekly_at(latest_due), timezone="UTC", misfire_grace_time=3600
    )
    await persist_due_time(settings, store_url, latest_due - timedelta(weeks=1))

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(
            settings, store_url=store_url, config_path="config.toml", stop=stop, job=RECORD
        )
    )
    await eventually(lambda: bool(messages(logs, f"job {JOB_ID} missed")))
    stop.set()
    await task

    assert RUNS == []
    (missed,) = messages(logs, f"job {JOB_ID} missed")
    assert missed.levelno == logging.WARNING
    assert due_time(missed) == latest_due
    job = await stored_job(settings, store_url)
    assert job.next_run_time == latest_due + timedelta(weeks=1)


async def test_unchanged_schedule_keeps_due_time_and_takes_new_settings(store_url: str) -> None:
    settings = make_settings()
    overdue = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
    await persist_due_time(settings, store_url, overdue)

    changed = make_settings(misfire_grace_time=600)
    job = await stored_job(changed, store_url, config_path="/srv/digest/config.toml")

    assert job.next_run_time == overdue
    assert job.misfire_grace_time == 600
    assert job.args == ("/srv/digest/config.toml", NEWSLETTER)


async def test_a_job_stored_under_a_function_path_that_moved_keeps_its_due_time(
    store_url: str,
) -> None:
    """Jobs stored before a module moved name a path that no longer imports: the job is
    given the current function and keeps its due time, not dropped by APScheduler."""
    settings = make_settings()
    overdue = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
    await persist_due_time(settings, store_url, overdue)
    engine = Store.open(store_url, migrate=False).engine
    with engine.begin() as conn:
        row = conn.execute(text(f"SELECT job_state FROM {JOB_TABLE}")).one()
        state = pickle.loads(row.job_state)
        state["func"] = "digest.ops.jobs:run_newsletter"  # where it was before the layout
        conn.execute(
            text(f"UPDATE {JOB_TABLE} SET job_state = :s WHERE id = :id"),
            {"s": pickle.dumps(state, pickle.HIGHEST_PROTOCOL), "id": JOB_ID},
        )
    engine.dispose()

    job = await stored_job(settings, store_url, job=DEFAULT_JOB)

    assert job.next_run_time == overdue
    assert job.func_ref == DEFAULT_JOB == "digest.ops.jobs:run_newsletter"


async def test_changed_schedule_is_rescheduled_from_now(
    store_url: str, logs: pytest.LogCaptureFixture
) -> None:
    await persist_due_time(make_settings(), store_url, datetime(2025, 3, 3, 6, tzinfo=UTC))

    changed = make_settings(schedule="30 8 * * tue")
    before = datetime.now(UTC)
    job = await stored_job(changed, store_url)

    expected = trigger_for(changed.newsletters[0]).get_next_fire_time(None, before)
    assert job.next_run_time == expected > before
    assert repr(job.trigger) == repr(trigger_for(changed.newsletters[0]))
    assert messages(logs, f"newsletter {NEWSLETTER}: schedule changed")


async def test_jobs_of_removed_newsletters_are_dropped_and_others_kept(store_url: str) -> None:
    two = settings_with(newsletter_table(), newsletter_table("alt"))
    first = build_scheduler(two, store_url=store_url, job=RECORD, config_path="config.toml")
    first.start(paused=True)
    first.add_job(RECORD, "interval", hours=1, args=("x", "y"), id="maintenance")
    await shut_down(first)

    second = build_scheduler(
        make_settings(), store_url=store_url, job=RECORD, config_path="config.toml"
    )
    second.start(paused=True)
    try:
        assert {job.id for job in second.get_jobs()} == {JOB_ID, "maintenance", RETRY_JOB_ID}
    finally:
        await shut_down(second)


def test_unknown_job_function_fails_before_the_store_is_touched(tmp_path: Path) -> None:
    with pytest.raises(LookupError):
        build_scheduler(
            make_settings(),
            store_url=f"sqlite:///{tmp_path / 'digest.db'}",
            job="tests.ops.test_schedule:no_such_job",
            config_path="config.toml",
        )
    assert not (tmp_path / "digest.db").exists()


# --- running -----------------------------------------------------------------------------


async def test_stop_lets_a_running_issue_finish(store_url: str) -> None:
    latest_due = minute_ago(timedelta(minutes=5))
    settings = make_settings(schedule=weekly_at(latest_due), timezone="UTC")
    await persist_due_time(settings, store_url, latest_due)

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(settings, store_url=store_url, config_path="config.toml", stop=stop, job=SLOW)
    )
    await eventually(lambda: bool(RUNS))
    stop.set()
    await task

    assert RUNS == [("started", NEWSLETTER), ("finished", NEWSLETTER)]


async def test_failing_run_is_logged_as_an_error(
    store_url: str, logs: pytest.LogCaptureFixture
) -> None:
    latest_due = minute_ago(timedelta(minutes=5))
    settings = make_settings(schedule=weekly_at(latest_due), timezone="UTC")
    await persist_due_time(settings, store_url, latest_due)

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(
            settings, store_url=store_url, config_path="config.toml", stop=stop, job=FAILING
        )
    )
    await eventually(lambda: bool(messages(logs, f"job {JOB_ID} failed")))
    stop.set()
    await task

    (failed,) = messages(logs, f"job {JOB_ID} failed")
    assert failed.levelno == logging.ERROR
    assert failed.exc_info and isinstance(failed.exc_info[1], RuntimeError)


# --- time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "offsets"),
    [
        (datetime(2025, 3, 17, tzinfo=BERLIN), [1, 1, 2, 2]),  # CET -> CEST on 30 March
        (datetime(2025, 10, 13, tzinfo=BERLIN), [2, 2, 1, 1]),  # CEST -> CET on 26 October
    ],
)
def test_weekly_run_stays_at_seven_local_across_dst(start: datetime, offsets: list[int]) -> None:
    trigger = trigger_for(make_settings(schedule="0 7 * * mon").newsletters[0])
    fire_times: list[datetime] = []
    previous = None
    for _ in offsets:
        previous = trigger.get_next_fire_time(previous, previous or start)
        fire_times.append(previous)

    assert [(t.weekday(), t.hour, t.minute) for t in fire_times] == [(0, 7, 0)] * 4
    assert [t.utcoffset() for t in fire_times] == [timedelta(hours=h) for h in offsets]
    assert [t.astimezone(UTC).hour for t in fire_times] == [7 - h for h in offsets]


@pytest.mark.parametrize(
    ("weekdays", "expected"),
    [
        ("1", ["mon"]),
        ("0", ["sun"]),
        ("7", ["sun"]),
        ("1-5", ["mon", "tue", "wed", "thu", "fri"]),
        ("*/2", ["sun", "tue", "thu", "sat"]),
        ("mon,3", ["mon", "wed"]),
        ("mon-fri", ["mon", "tue", "wed", "thu", "fri"]),
    ],
)
def test_weekday_numbers_mean_what_they_mean_in_crontab(weekdays: str, expected: list[str]) -> None:
    trigger = trigger_for(scheduled(f"0 7 * * {weekdays}"))
    fire_time = datetime(2025, 1, 5, tzinfo=BERLIN)  # a Sunday, before 07:00
    days = set()
    for _ in range(14):
        fire_time = trigger.get_next_fire_time(fire_time, fire_time + timedelta(seconds=1))
        days.add(WEEKDAYS[fire_time.weekday()])
    assert sorted(days, key=WEEKDAYS.index) == sorted(expected, key=WEEKDAYS.index)


@pytest.mark.parametrize("weekdays", ["8", "5-1", "mon-5", "*/0"])
def test_bad_weekday_numbers_are_refused(weekdays: str) -> None:
    with pytest.raises(ValueError):
        trigger_for(scheduled(f"0 7 * * {weekdays}"))


def test_next_runs_are_in_each_newsletters_local_time() -> None:
    settings = settings_with(
        newsletter_table(),
        newsletter_table("weekly-us", schedule="30 6 * * fri", timezone="America/New_York"),
    )
    now = datetime(2025, 3, 26, 12, 0, tzinfo=UTC)  # a Wednesday

    runs = next_runs(settings, now)

    assert [(n.id, t) for n, t in runs] == [
        (NEWSLETTER, datetime(2025, 3, 31, 7, 0, tzinfo=BERLIN)),
        ("weekly-us", datetime(2025, 3, 28, 6, 30, tzinfo=ZoneInfo("America/New_York"))),
    ]
    assert [t.tzinfo for _, t in runs] == [BERLIN, ZoneInfo("America/New_York")]
    assert [t.utcoffset() for _, t in runs] == [timedelta(hours=2), timedelta(hours=-4)]
    with pytest.raises(ValueError):
        next_runs(settings, datetime(2025, 3, 26, 12, 0))


# --- the unsubscribe mailbox -------------------------------------------------------------


async def record_mailbox(config_path: str) -> None:
    RUNS.append(("mailbox", config_path))


def with_mailbox(settings: Settings, **values: Any) -> Settings:
    return replace(
        settings, unsubscribe_mailbox=UnsubscribeMailboxSettings(maildir="mail", **values)
    )


async def test_mailbox_job_runs_at_start_and_every_interval(store_url: str) -> None:
    settings = with_mailbox(make_settings(), interval_minutes=5)
    scheduler = build_scheduler(settings, store_url=store_url, job=RECORD, config_path="c.toml")
    scheduler.start(paused=True)  # due at once; paused, so this test does not run it
    job = scheduler.get_job(MAILBOX_JOB_ID)
    assert job.func_ref == MAILBOX_JOB and job.args == ("c.toml",)
    assert job.trigger.interval == timedelta(minutes=5)
    assert job.next_run_time <= datetime.now(UTC) and job.max_instances == 1
    await shut_down(scheduler)
    # Polling has nothing to catch up on after a restart: the job is not persisted.
    engine = Store.open(store_url, migrate=False).engine
    with engine.connect() as conn:
        ids = conn.execute(select(text("id")).select_from(text(JOB_TABLE))).scalars().all()
    engine.dispose()
    assert ids == [JOB_ID]

    plain = build_scheduler(make_settings(), store_url=store_url, job=RECORD, config_path="c")
    plain.start(paused=True)
    try:
        assert plain.get_job(MAILBOX_JOB_ID) is None
    finally:
        await shut_down(plain)  # closes the job store's connections


async def test_run_scheduler_processes_the_mailbox_at_start(store_url: str) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(
            with_mailbox(make_settings()),
            store_url=store_url,
            config_path="c.toml",
            stop=stop,
            job=RECORD,
            mailbox_job="tests.ops.test_schedule:record_mailbox",
        )
    )
    await eventually(lambda: bool(RUNS))
    stop.set()
    await task
    assert RUNS == [("mailbox", "c.toml")]


async def test_bounce_mailbox_job_runs_at_start_and_every_interval(store_url: str) -> None:
    settings = replace(make_settings(), bounces=BounceSettings(maildir="rueck", interval_minutes=7))
    scheduler = build_scheduler(settings, store_url=store_url, job=RECORD, config_path="c.toml")
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(BOUNCE_JOB_ID)
        assert job.func_ref == BOUNCE_JOB and job.args == ("c.toml",)
        assert job.trigger.interval == timedelta(minutes=7)
        assert job.next_run_time <= datetime.now(UTC) and job.max_instances == 1
        assert scheduler.get_job(MAILBOX_JOB_ID) is None
    finally:
        await shut_down(scheduler)


# --- collecting through the week ---------------------------------------------------------


def with_source(newsletter_id: str = NEWSLETTER, **overrides: Any) -> dict[str, Any]:
    source = {
        "name": "Stadt",
        "url": "https://stadt.example/feed.rss",
        "default_category": "politik",
    }
    return newsletter_table(newsletter_id, **{"sources": [source], **overrides})


async def test_sources_are_collected_at_start_and_every_configured_interval(
    store_url: str,
) -> None:
    settings = settings_with(
        with_source(collect_every_minutes=20),
        with_source("ohne-quellen", sources=[]),
        with_source("nur-vor-dem-versand", collect_every_minutes=0),
        with_source("stuendlich"),
    )
    scheduler = build_scheduler(settings, store_url=store_url, job=RECORD, config_path="c.toml")
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(collect_job_id(NEWSLETTER))
        assert job.func_ref == COLLECT_JOB and job.args == ("c.toml", NEWSLETTER)
        assert job.trigger.interval == timedelta(minutes=20)
        assert job.next_run_time <= datetime.now(UTC) and job.max_instances == 1
        assert scheduler.get_job(collect_job_id("stuendlich")).trigger.interval == timedelta(
            hours=1
        )
        assert scheduler.get_job(collect_job_id("ohne-quellen")) is None
        assert scheduler.get_job(collect_job_id("nur-vor-dem-versand")) is None
    finally:
        await shut_down(scheduler)


async def test_times_in_the_log_are_utc_whatever_the_newsletter_zone(
    store_url: str, logs: pytest.LogCaptureFixture
) -> None:
    latest_due = minute_ago(timedelta(hours=1))
    settings = make_settings(
        schedule=weekly_at(latest_due.astimezone(BERLIN)), timezone="Europe/Berlin"
    )
    await persist_due_time(settings, store_url, latest_due)

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_scheduler(
            settings, store_url=store_url, config_path="config.toml", stop=stop, job=RECORD
        )
    )
    await eventually(lambda: bool(messages(logs, f"job {JOB_ID} ran")))
    stop.set()
    await task

    (due_since,) = messages(logs, f"newsletter {NEWSLETTER}: due since")
    (ran,) = messages(logs, f"job {JOB_ID} ran")
    utc = latest_due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"due since {utc};" in due_since.getMessage()
    assert ran.getMessage() == f"job {JOB_ID} ran (due {utc})"
    assert due_time(ran) == latest_due
