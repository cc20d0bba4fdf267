"""The cluster's schedule: a tick, once a minute, queues the jobs that fell due.

Procrastinate's own schedule counts in UTC only, so it just runs the tick (one at a time
across the cluster); when a newsletter is due is reckoned here with the same crontab
trigger as ``digest run`` (``digest.config.cron``), in the newsletter's time zone, DST
included. The queue only runs each due job once.

Every scheduled job has a mark in the store (``schedule_marks``): its last due time
handled and the time up to which its due times have been handled (the last tick). For
each job a tick, in one transaction, locks the mark, queues what fell due since and
advances it; a second tick at the same moment waits on the lock and then finds nothing
left. So each due time is queued once however many ticks run, even without
Procrastinate's lock on the tick, and a tick whose clock is behind queues nothing twice.

* A newsletter (mark ``newsletter:<id>``) is queued as ``RUN_NEWSLETTER`` for the latest
  due time since the last tick, if that is within its ``misfire_grace_time``; several
  due times missed meanwhile make one run (``digest run``'s ``coalesce``), and a latest
  due time later than the grace is logged and skipped. Its trigger counts from the last
  due time handled, as APScheduler counts from a job's previous run (around a DST change
  its answer depends on where it counts from). A newsletter without a mark starts from
  its first tick (no catch-up of the past, as a job new to ``digest run``). The mark is
  a time, not a trigger: a changed ``schedule`` counts from the last tick on, so its
  times that passed before are not caught up.
* Its sources (``collect:<id>``) every ``collect_every_minutes``, at the first tick too:
  one ``COLLECT_HOST`` job per host, locked by host, so a host's pacing and robots.txt
  hold across the cluster.
* The retry pass (``retry``) every ``retry.check_minutes`` (a minute at least) while an
  issue has rows left; each configured mailbox (``mailbox:<kind>``) every
  ``interval_minutes``; the mail queue (``mail-queue``) when a mail is due, and hourly
  to delete the sign-ups never confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from digest.cluster import names
from digest.cluster.app import defer
from digest.config.cron import trigger_for
from digest.sources.collect import source_host

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

    from digest.config import NewsletterSettings, Settings
    from digest.store import Store
    from digest.store.schedule import ScheduleMark

__all__ = ["TickReport", "due_times", "run_tick", "tick", "utc_text"]

log = logging.getLogger("digest.cluster")

#: The mail queue runs this often with nothing due: it deletes expired sign-ups too.
PURGE_EVERY = timedelta(hours=1)


@dataclass
class TickReport:
    """What one tick queued, by mark name: newsletter runs with their due times, runs
    skipped as missed, and the other jobs; marks it could not handle (logged)."""

    runs: list[tuple[str, datetime]] = field(default_factory=list)
    missed: list[tuple[str, datetime]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def utc_text(moment: datetime) -> str:
    """``moment`` in UTC, ISO 8601 (the ``due`` of a run job, its queueing lock, the log)."""
    return moment.astimezone(UTC).isoformat()


def due_times(trigger: CronTrigger, after: datetime | None, now: datetime) -> list[datetime]:
    """The fire times of ``trigger`` after ``after`` up to ``now`` included, oldest first.

    ``after`` None: a fire time at ``now`` only (a new job starts from now). Each next time
    is asked as APScheduler asks it, from the previous one in the trigger's zone.
    """
    fires: list[datetime] = []  # in UTC: times of one zone compare without their fold
    # Asked in the trigger's zone, as its own answers come: from the same instant in UTC
    # it can answer that instant again in the repeated hour of a DST change.
    previous = after.astimezone(trigger.timezone) if after is not None else None
    fire = trigger.get_next_fire_time(previous, previous or now)
    while fire is not None and (moment := fire.astimezone(UTC)) <= now:
        last = fires[-1] if fires else after
        if last is not None and moment <= last:
            break  # never the case with APScheduler 3's crontab triggers; no endless loop
        fires.append(moment)
        previous = fire
        fire = trigger.get_next_fire_time(previous, previous)
    return fires


def tick(settings: Settings, store: Store, now: datetime) -> TickReport:
    """Queue every job due at ``now`` (aware) whose due time no tick has handled yet."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    report = TickReport()
    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    for newsletter in settings.newsletters:
        with _handled(report, f"newsletter:{newsletter.id}"):
            _run_newsletter(settings, store, newsletter, now, report)
    for newsletter in settings.newsletters:
        if newsletter.collect_every_minutes and newsletter.sources:
            with _handled(report, f"collect:{newsletter.id}"):
                _collect(settings, store, newsletter, minute, report)
    chores: list[tuple[str, timedelta, str, dict[str, Any]]] = []
    with _handled(report, "chores"):
        chores = _chores(settings, store, now)
    for name, every, task, options in chores:
        with _handled(report, name), store.schedule_mark(name) as mark:
            if not _due(mark, minute, every):
                continue
            if defer(settings, mark.connection, task, **options) is not None:
                report.jobs.append(name)  # else the last one still waits
    return report


async def run_tick(settings: Settings, store: Store, *, now: datetime) -> TickReport:
    """:func:`tick` off the event loop (the store blocks)."""
    return await asyncio.to_thread(tick, settings, store, now)


@contextmanager
def _handled(report: TickReport, name: str) -> Iterator[None]:
    """One mark's failure is logged and leaves the others to be handled."""
    try:
        yield
    except Exception:
        log.exception("tick: %s not handled; the next tick tries again", name)
        report.failed.append(name)


def _run_newsletter(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    now: datetime,
    report: TickReport,
) -> None:
    trigger = trigger_for(newsletter)
    with store.schedule_mark(f"newsletter:{newsletter.id}") as mark:
        due = _fresh_due_times(trigger, mark, now)
        if not due:
            return
        latest = due[-1]
        if now - latest > timedelta(seconds=newsletter.misfire_grace_time):
            log.warning(
                "newsletter %s missed its run due %s: later than its grace time (%s s)",
                newsletter.id,
                utc_text(latest),
                newsletter.misfire_grace_time,
            )
            report.missed.append((newsletter.id, latest))
            return
        when = utc_text(latest)
        queued = defer(
            settings,
            mark.connection,
            names.RUN_NEWSLETTER,
            queueing_lock=f"run:{newsletter.id}:{when}",
            newsletter=newsletter.id,
            due=when,
        )
        if queued is None:
            return  # the same run already waits in the queue
        report.runs.append((newsletter.id, latest))
        earlier = f" ({len(due) - 1} earlier due times missed make no run of their own)"
        log.info(
            "newsletter %s: run due %s queued%s",
            newsletter.id,
            when,
            earlier if len(due) > 1 else "",
        )


def _fresh_due_times(trigger: CronTrigger, mark: ScheduleMark, now: datetime) -> list[datetime]:
    """The due times of ``trigger`` up to ``now`` that no tick has handled; the mark
    advanced past them.

    The trigger counts from the last due time handled, as APScheduler counts from a
    job's previous run time: counted from another time its answer can differ around a
    DST change (a 02:30 that does not exist runs at 03:30, but only for a count from
    before 02:00). Due times up to the last tick are not new: the schedule has changed
    since, and a changed schedule counts from the tick that first sees it, as
    ``digest run`` reschedules a changed schedule from now. The first tick counts from
    its own time.
    """
    if mark.due_at is None or mark.ticked_at is None:
        fires = due_times(trigger, None, now)
        mark.advance(due_at=fires[-1] if fires else now, ticked_at=now)
        return fires
    fires = due_times(trigger, mark.due_at, now)
    fresh = [fire for fire in fires if fire > mark.ticked_at]
    if fires:
        mark.advance(due_at=fires[-1])
    mark.advance(ticked_at=now)
    return fresh


def _collect(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    minute: datetime,
    report: TickReport,
) -> None:
    name = f"collect:{newsletter.id}"
    with store.schedule_mark(name) as mark:
        if not _due(mark, minute, timedelta(minutes=newsletter.collect_every_minutes)):
            return
        hosts: dict[str, list[list[str]]] = {}
        for source in newsletter.sources:
            hosts.setdefault(source_host(source), []).append([newsletter.id, source.name])
        for host, sources in sorted(hosts.items()):
            queued = defer(
                settings,
                mark.connection,
                names.COLLECT_HOST,
                lock=f"host:{host}",
                queueing_lock=f"collect:{newsletter.id}:{host}",
                host=host,
                sources=sources,
            )
            if queued is not None:  # else the host's last job for it still waits
                report.jobs.append(f"{name}:{host}")


def _chores(
    settings: Settings, store: Store, now: datetime
) -> list[tuple[str, timedelta, str, dict[str, Any]]]:
    """The jobs run at an interval, as (mark name, interval, task, how to queue it)."""
    chores: list[tuple[str, timedelta, str, dict[str, Any]]] = []
    if store.unfinished_issues([n.id for n in settings.newsletters]):
        every = timedelta(minutes=max(1.0, settings.retry.check_minutes))
        chores.append(("retry", every, names.RETRY_PASS, {"queueing_lock": "retry-pass"}))
    for kind, mailbox in (
        ("unsubscribe", settings.unsubscribe_mailbox),
        ("bounces", settings.bounces),
    ):
        if mailbox.configured:
            every = timedelta(minutes=mailbox.interval_minutes)
            options = {"lock": f"mailbox:{kind}", "queueing_lock": f"mailbox:{kind}", "kind": kind}
            chores.append((f"mailbox:{kind}", every, names.MAILBOX, options))
    every = timedelta(0) if store.mail_due(now) else PURGE_EVERY
    options = {"lock": "mail-queue", "queueing_lock": "mail-queue"}
    chores.append(("mail-queue", every, names.MAIL_QUEUE, options))
    return chores


def _due(mark: ScheduleMark, minute: datetime, every: timedelta) -> bool:
    """Whether a job run every ``every`` is due at ``minute``; if so the mark moves there.

    Counted in whole minutes, as the ticks come: a tick a second late must not push a
    one-minute job to every second minute.
    """
    if mark.due_at is not None and minute < mark.due_at + every:
        return False
    mark.advance(due_at=minute, ticked_at=minute)
    return True
