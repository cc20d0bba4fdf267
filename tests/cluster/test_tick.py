"""The cluster's tick on a real PostgreSQL store with Procrastinate's queue: what it
queues, when (in each newsletter's time zone, across DST), and once per due time
however many ticks run at the same moment."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from digest.cluster import app as names
from digest.cluster.tick import TickReport, run_tick, tick
from digest.config import Settings
from digest.config.cron import trigger_for
from digest.store import Store
from tests.cluster.conftest import apply_queue_schema, newsletter_table, settings_for
from tests.conftest import TEST_SECRET_KEY

SUNDAY = "sonntag"  # 02:30 on Sundays, Berlin: missing in March, twice in October
MONDAY = "montag"  # 06:00 on Mondays, Berlin


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def queued(store: Store, task: str | None = None) -> list[dict[str, Any]]:
    """The jobs in the queue, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT task_name, args, lock, queueing_lock, status "
                "FROM procrastinate_jobs ORDER BY id"
            )
        ).mappings()
        jobs = [dict(row) for row in rows]
    return [job for job in jobs if task is None or job["task_name"] == task]


def runs(store: Store) -> list[tuple[str, datetime]]:
    """(newsletter, due) of every queued newsletter run, oldest first."""
    return [
        (job["args"]["newsletter"], datetime.fromisoformat(job["args"]["due"]))
        for job in queued(store, names.RUN_NEWSLETTER)
    ]


def consume(store: Store) -> None:
    """Every waiting job done, as if workers took them at once: the queueing locks are
    free again, so only the schedule's marks stand between a due time and a second run."""
    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'todo'")
        )


def minutes(start: str, end: str) -> Iterator[datetime]:
    moment, last = utc(start), utc(end)
    while moment <= last:
        yield moment
        moment += timedelta(minutes=1)


@pytest.fixture
def tickers(cluster_url: str) -> Iterator[list[Store]]:
    """Three stores on the cluster's database, as three machines have."""
    stores = [Store.open(cluster_url, secret_key=TEST_SECRET_KEY) for _ in range(3)]
    try:
        apply_queue_schema(settings_for(cluster_url))
        yield stores
    finally:
        for store in stores:
            store.close()


def tick_together(settings: Settings, stores: list[Store], now: datetime) -> list[TickReport]:
    """One tick per store, all at ``now``, started at once on threads of their own."""
    barrier = threading.Barrier(len(stores))
    reports: list[TickReport] = []
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            barrier.wait(timeout=30)
            reports.append(tick(settings, store, now))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(reports) == len(stores)
    return reports


# Minute-by-minute windows around each due time, a DST change in between.
SPRING = [
    ("2025-03-24 04:30", "2025-03-24 05:30"),  # Monday 06:00 CET
    ("2025-03-29 23:50", "2025-03-30 02:10"),  # Sunday: 02:00 CET becomes 03:00 CEST
    ("2025-03-31 03:30", "2025-03-31 04:30"),  # Monday 06:00 CEST
]
AUTUMN = [
    ("2025-10-20 03:30", "2025-10-20 04:30"),  # Monday 06:00 CEST
    ("2025-10-25 23:50", "2025-10-26 02:10"),  # Sunday: 03:00 CEST becomes 02:00 CET
    ("2025-10-27 04:30", "2025-10-27 05:30"),  # Monday 06:00 CET
]


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        (
            SPRING,
            [
                (MONDAY, "2025-03-24 05:00"),
                # 02:30 does not exist that night: the trigger fires at 03:30 CEST.
                (SUNDAY, "2025-03-30 01:30"),
                (MONDAY, "2025-03-31 04:00"),
            ],
        ),
        (
            AUTUMN,
            [
                (MONDAY, "2025-10-20 04:00"),
                # 02:30 comes twice that night; the trigger fires at both, as `digest run` does.
                (SUNDAY, "2025-10-26 00:30"),
                (SUNDAY, "2025-10-26 01:30"),
                (MONDAY, "2025-10-27 05:00"),
            ],
        ),
    ],
    ids=["spring", "autumn"],
)
def test_three_tickers_queue_each_due_time_once_across_dst(
    cluster_url: str,
    tickers: list[Store],
    windows: list[tuple[str, str]],
    expected: list[tuple[str, str]],
) -> None:
    settings = settings_for(
        cluster_url,
        newsletter_table(SUNDAY, schedule="30 2 * * 0"),
        newsletter_table(MONDAY, schedule="0 6 * * 1"),
    )
    for start, end in windows:
        for now in minutes(start, end):
            reports = tick_together(settings, tickers, now)
            assert not [r.failed for r in reports if r.failed]
            consume(tickers[0])

    assert runs(tickers[0]) == [(n, utc(t)) for n, t in expected]
    # The same instants as the newsletters' own triggers give, asked as `digest run` asks.
    for newsletter in settings.newsletters:
        trigger = trigger_for(newsletter)
        fire, fires = trigger.get_next_fire_time(None, utc(windows[0][0])), []
        while fire <= utc(windows[-1][1]):
            fires.append(fire.astimezone(UTC))
            fire = trigger.get_next_fire_time(fire, fire)
        assert [d for n, d in runs(tickers[0]) if n == newsletter.id] == fires
    for job in queued(tickers[0], names.RUN_NEWSLETTER):
        assert job["queueing_lock"] == f"run:{job['args']['newsletter']}:{job['args']['due']}"


def test_a_mark_is_held_until_its_transaction_ends(cluster_store: Store) -> None:
    """A second tick on the same mark waits for the first and sees what it advanced."""
    first_in, second_started = threading.Event(), threading.Event()
    seen: list[datetime | None] = []
    before, moment = utc("2024-12-30 05:00"), utc("2025-01-06 05:00")
    with cluster_store.schedule_mark("newsletter:x") as mark:
        assert (mark.due_at, mark.ticked_at) == (None, None)  # a new mark
        mark.advance(due_at=before)

    def second() -> None:
        first_in.wait(10)
        second_started.set()
        with cluster_store.schedule_mark("newsletter:x") as mark:
            seen.append(mark.due_at)

    thread = threading.Thread(target=second)
    thread.start()
    with cluster_store.schedule_mark("newsletter:x") as mark:
        assert mark.due_at == before
        first_in.set()
        second_started.wait(10)
        thread.join(timeout=0.5)  # it waits on the row: still running
        assert thread.is_alive()
        mark.advance(due_at=moment)
    thread.join(timeout=10)
    assert seen == [moment]
    assert cluster_store.schedule_marks() == {"newsletter:x": (moment, None)}
    with cluster_store.schedule_mark("newsletter:x") as mark:
        mark.advance(due_at=before, ticked_at=before)  # a mark never moves back
    assert cluster_store.schedule_marks() == {"newsletter:x": (moment, before)}


@pytest.mark.parametrize(
    ("grace", "expected"),
    [(3 * 3600, [(MONDAY, utc("2025-01-06 05:00"))]), (3600, [])],
    ids=["within-grace", "beyond-grace"],
)
def test_a_run_missed_by_the_ticks_runs_once_within_its_grace(
    cluster_url: str,
    cluster_store: Store,
    caplog: pytest.LogCaptureFixture,
    grace: int,
    expected: list[tuple[str, datetime]],
) -> None:
    caplog.set_level(logging.INFO, logger="digest.cluster")
    settings = settings_for(
        cluster_url, newsletter_table(MONDAY, schedule="0 6 * * 1", misfire_grace_time=grace)
    )
    # Last tick three weeks before; then no tick until two hours after the latest due time.
    asyncio.run(run_tick(settings, cluster_store, now=utc("2024-12-16 04:00")))
    report = asyncio.run(run_tick(settings, cluster_store, now=utc("2025-01-06 07:00")))

    assert runs(cluster_store) == expected  # four due times passed: one run at most
    assert report.runs == expected
    missed = [r for r in caplog.records if "missed its run" in r.getMessage()]
    if expected:
        assert not missed
        assert "3 earlier due times missed make no run of their own" in caplog.text
    else:
        assert report.missed == [(MONDAY, utc("2025-01-06 05:00"))]
        (record,) = missed
        assert record.levelno == logging.WARNING
        assert record.getMessage() == (
            "newsletter montag missed its run due 2025-01-06T05:00:00+00:00: "
            "later than its grace time (3600 s)"
        )
    # Handled either way: the next tick queues nothing more.
    tick(settings, cluster_store, utc("2025-01-06 07:01"))
    assert runs(cluster_store) == expected


def test_a_first_tick_starts_from_now(cluster_url: str, cluster_store: Store) -> None:
    settings = settings_for(cluster_url, newsletter_table(MONDAY, schedule="0 6 * * 1"))
    tick(settings, cluster_store, utc("2025-01-06 05:30"))  # half an hour after 06:00 CET
    assert runs(cluster_store) == []
    tick(settings, cluster_store, utc("2025-01-13 05:00"))
    assert runs(cluster_store) == [(MONDAY, utc("2025-01-13 05:00"))]


def test_a_changed_schedule_counts_from_the_next_tick(
    cluster_url: str, cluster_store: Store
) -> None:
    def at(schedule: str, moment: str) -> None:
        settings = settings_for(cluster_url, newsletter_table(MONDAY, schedule=schedule))
        tick(settings, cluster_store, utc(moment))

    at("0 6 * * 1", "2025-01-06 04:00")
    at("0 7 * * 1", "2025-01-06 05:00")  # changed: 06:00 (05:00 UTC) is not due any more
    assert runs(cluster_store) == []
    at("0 7 * * 1", "2025-01-06 06:00")
    assert runs(cluster_store) == [(MONDAY, utc("2025-01-06 06:00"))]
    # A new schedule whose time passed before the last tick is not caught up.
    at("0 7 * * 1", "2025-01-06 06:10")
    at("5 7 * * 1", "2025-01-06 06:11")
    assert runs(cluster_store) == [(MONDAY, utc("2025-01-06 06:00"))]
    at("5 7 * * 1", "2025-01-13 06:05")
    assert runs(cluster_store)[-1] == (MONDAY, utc("2025-01-13 06:05"))
    # One whose time came after the last tick runs at the first tick that sees it.
    at("5 7 * * 1", "2025-01-13 06:20")
    at("25 7 * * 1", "2025-01-13 06:30")
    assert runs(cluster_store)[-1] == (MONDAY, utc("2025-01-13 06:25"))
    assert len(runs(cluster_store)) == 3


def source(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "url": url, "default_category": "politik"}


def test_sources_are_collected_by_host_under_the_hosts_lock(
    cluster_url: str, cluster_store: Store
) -> None:
    settings = settings_for(
        cluster_url,
        newsletter_table(
            "eins",
            collect_every_minutes=30,
            sources=[
                source("a", "https://feeds.example.org/a.xml"),
                source("b", "https://FEEDS.example.org:8443/b.xml"),
                source("c", "https://other.example.net/c.xml"),
                source("d", "examples/feeds/politik.rss"),
            ],
        ),
        newsletter_table(
            "zwei", collect_every_minutes=60, sources=[source("e", "http://feeds.example.org/e")]
        ),
    )
    tick(settings, cluster_store, utc("2025-01-06 10:00:07"))

    jobs = {
        (job["args"]["sources"][0][0], job["args"]["host"]): job
        for job in queued(cluster_store, names.COLLECT_HOST)
    }
    assert sorted(jobs) == [
        ("eins", "feeds.example.org"),
        ("eins", "local"),
        ("eins", "other.example.net"),
        ("zwei", "feeds.example.org"),
    ]
    one_host = jobs["eins", "feeds.example.org"]
    assert one_host["args"]["sources"] == [["eins", "a"], ["eins", "b"]]
    assert one_host["lock"] == jobs["zwei", "feeds.example.org"]["lock"] == "host:feeds.example.org"
    assert one_host["queueing_lock"] == "collect:eins:feeds.example.org"
    assert jobs["eins", "local"]["args"]["sources"] == [["eins", "d"]]

    # Each newsletter at its own interval, counted in whole minutes from the first tick.
    consume(cluster_store)
    tick(settings, cluster_store, utc("2025-01-06 10:29:59"))
    assert len(queued(cluster_store, names.COLLECT_HOST)) == 4
    tick(settings, cluster_store, utc("2025-01-06 10:30:00"))
    assert len(queued(cluster_store, names.COLLECT_HOST)) == 7
    # A host's job still waiting is not queued twice.
    tick(settings, cluster_store, utc("2025-01-06 11:00:01"))
    newest = queued(cluster_store, names.COLLECT_HOST)[7:]
    assert [(j["args"]["sources"][0][0], j["args"]["host"]) for j in newest] == [
        ("zwei", "feeds.example.org")
    ]


def test_mailboxes_retries_and_the_mail_queue_are_queued_at_their_intervals(
    cluster_url: str, cluster_store: Store, tmp_path: Any
) -> None:
    settings = settings_for(
        cluster_url,
        unsubscribe_mailbox={"maildir": str(tmp_path / "abmelden"), "interval_minutes": 15},
    )
    tick(settings, cluster_store, utc("2025-01-06 10:00:30"))
    assert [(j["task_name"], j["args"]) for j in queued(cluster_store)] == [
        (names.MAILBOX, {"kind": "unsubscribe"}),
        (names.MAIL_QUEUE, {}),  # at once, then hourly: it also deletes expired sign-ups
    ]
    assert [j["queueing_lock"] for j in queued(cluster_store)] == [
        "mailbox:unsubscribe",
        "mail-queue",
    ]
    for minute in range(1, 61):
        consume(cluster_store)
        tick(settings, cluster_store, utc("2025-01-06 10:00") + timedelta(minutes=minute))
    tasks = [j["task_name"] for j in queued(cluster_store)][2:]
    assert tasks == [names.MAILBOX] * 4 + [names.MAIL_QUEUE]  # at :15, :30, :45, :00; :00
    assert names.RETRY_PASS not in tasks  # no issue has rows left


def test_a_due_confirmation_mail_queues_the_mail_queue_job(
    cluster_url: str, cluster_store: Store
) -> None:
    settings = settings_for(cluster_url)
    now = utc("2025-01-06 10:00")
    tick(settings, cluster_store, now)
    consume(cluster_store)
    tick(settings, cluster_store, now + timedelta(minutes=1))
    assert queued(cluster_store, names.MAIL_QUEUE)[1:] == []
    with cluster_store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO mail_queue (request_id, kind, newsletter, recipient_key, "
                "created_at, attempts, next_attempt_at) "
                "VALUES ('r1', 'confirm', 'wochenueberblick', 'a@example.org', :t, 0, :t)"
            ),
            {"t": now},
        )
    tick(settings, cluster_store, now + timedelta(minutes=2))
    assert len(queued(cluster_store, names.MAIL_QUEUE)) == 2
