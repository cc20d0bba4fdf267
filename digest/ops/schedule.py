"""APScheduler wiring: when each newsletter is due, and the scheduler that runs it.

Each newsletter is one job, ``newsletter:<id>``, in a persistent SQLAlchemy job store kept
in the application's own database. Polling jobs (sources collected through the week,
mailboxes, deferred deliveries) live in memory. The job survives restarts, and so does its due time:
a scheduler that was down over a due time runs that issue once when it comes back, if it
is back within the newsletter's ``misfire_grace_time`` (later than that, the run counts as
missed and the job waits for its next due time).

APScheduler 3 behaviours this module works around:

* ``add_job(..., replace_existing=True)`` computes ``next_run_time`` from *now* unless one
  is passed, which would silently skip a run that fell due while the scheduler was down.
  :func:`build_scheduler` therefore reads the stored jobs first and passes their stored
  ``next_run_time`` on when the schedule is unchanged.
* Its crontab parser counts weekday 0 as Monday (APScheduler issue 286), so ``1`` would
  mean Tuesday; :func:`trigger_for` reads weekday numbers as crontab does (0 or 7 = Sunday).
* ``AsyncIOScheduler.shutdown(wait=True)`` cancels running coroutine jobs instead of
  waiting for them; :func:`run_scheduler` pauses and lets a running issue finish first.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import ref_to_obj
from sqlalchemy import inspect, select

from digest.config import NewsletterSettings, Settings
from digest.config.cron import first_fire_time, next_runs, next_runs_of, trigger_for
from digest.store import Store

__all__ = [
    "DEFAULT_JOB",
    "COLLECT_JOB",
    "collect_job_id",
    "MAILBOX_JOB",
    "MAILBOX_JOB_ID",
    "RETRY_JOB",
    "RETRY_JOB_ID",
    "JOB_ID_PREFIX",
    "JOB_TABLE",
    "job_id",
    "trigger_for",
    "next_runs",
    "next_runs_of",
    "build_scheduler",
    "run_scheduler",
]

logger = logging.getLogger("digest.ops.schedule")

DEFAULT_JOB = "digest.ops.jobs:run_newsletter"
MAILBOX_JOB = "digest.ops.jobs:process_unsubscribe_mailbox"
MAILBOX_JOB_ID = "unsubscribe-mailbox"
BOUNCE_JOB = "digest.ops.jobs:process_bounce_mailbox"
BOUNCE_JOB_ID = "bounce-mailbox"
COLLECT_JOB = "digest.ops.jobs:collect_sources"
COLLECT_JOB_PREFIX = "collect:"
RETRY_JOB = "digest.ops.jobs:retry_due_deliveries"
RETRY_JOB_ID = "delivery-retries"
JOB_ID_PREFIX = "newsletter:"
JOB_TABLE = "apscheduler_jobs"


def job_id(newsletter_id: str) -> str:
    """The scheduler's job id of a newsletter."""
    return f"{JOB_ID_PREFIX}{newsletter_id}"


def collect_job_id(newsletter_id: str) -> str:
    """The scheduler's id of the job that collects a newsletter's sources."""
    return f"{COLLECT_JOB_PREFIX}{newsletter_id}"


def build_scheduler(
    settings: Settings,
    *,
    store_url: str,
    job: str = DEFAULT_JOB,
    config_path: str,
    mailbox_job: str = MAILBOX_JOB,
    bounce_job: str = BOUNCE_JOB,
    retry_job: str = RETRY_JOB,
    collect_job: str = COLLECT_JOB,
) -> AsyncIOScheduler:
    """A scheduler (not yet started) with one persistent job per configured newsletter.

    The job store is the table ``apscheduler_jobs`` in the database at ``store_url``. Its
    rows are brought in line with ``settings`` before the scheduler starts:

    * a newsletter without a stored job gets one, first due at its next scheduled time;
    * a stored job whose schedule (cron fields and time zone) is unchanged keeps its stored
      ``next_run_time``, even one in the past, so a run missed while the scheduler was down
      happens once on start (``coalesce``) if it is within ``misfire_grace_time``; its
      function, arguments and grace time are updated from the settings;
    * a stored job whose schedule changed is rescheduled from now on the new schedule;
    * a stored ``newsletter:*`` job of a newsletter no longer configured is removed. Rows
      with other ids are not ours and stay untouched.

    ``job`` is a textual reference (``module:function``) to a coroutine function called
    as ``job(config_path, newsletter_id)``; only the reference is stored.

    With an ``[unsubscribe_mailbox]`` configured, ``mailbox_job(config_path)`` runs at
    start and every ``interval_minutes``; so does ``bounce_job(config_path)`` with a
    mailbox in ``[bounces]``. Those jobs live in memory only: a poll missed while the
    scheduler was down has nothing to catch up on.

    ``retry_job(config_path)`` runs every ``retry.check_minutes`` and sends the deferred
    deliveries that are due, of every issue not finished (not only the newest week).
    It too lives in memory: the ledger knows what is due.

    ``collect_job(config_path, newsletter_id)`` collects each newsletter with sources at
    start and every ``collect_every_minutes`` (0: not at all; the weekly run collects
    before composing either way), in memory too: what a feed still carries is fetched
    at start.
    """
    ref_to_obj(job)  # fail before touching the store if the job function cannot be found
    ref_to_obj(mailbox_job)
    ref_to_obj(bounce_job)
    ref_to_obj(retry_job)
    ref_to_obj(collect_job)
    now = datetime.now(UTC)
    triggers = _newsletter_triggers(settings, now)

    # The app's engine settings (SQLite busy timeout) also keep the job store from failing
    # with "database is locked" while a running issue writes to the same file.
    jobstore = SQLAlchemyJobStore(
        engine=Store.open(store_url, migrate=False).engine, tablename=JOB_TABLE
    )
    scheduler = AsyncIOScheduler(
        timezone=UTC, jobstores={"default": jobstore, "memory": MemoryJobStore()}
    )
    try:
        _sync_newsletter_jobs(
            scheduler, jobstore, settings, triggers, job=job, config_path=config_path
        )
    except BaseException:
        jobstore.shutdown()
        raise
    _add_mailbox_jobs(
        scheduler,
        settings,
        now,
        mailbox_job=mailbox_job,
        bounce_job=bounce_job,
        config_path=config_path,
    )
    _add_retry_job(scheduler, settings, retry_job=retry_job, config_path=config_path)
    _add_collect_jobs(scheduler, settings, now, collect_job=collect_job, config_path=config_path)
    scheduler.add_listener(
        _log_job_event,
        EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES,
    )
    return scheduler


def _newsletter_triggers(settings: Settings, now: datetime) -> dict[str, CronTrigger]:
    """Each newsletter's trigger by id; ConfigError for a schedule that never falls due."""
    triggers = {}
    for newsletter in settings.newsletters:
        triggers[newsletter.id] = trigger = trigger_for(newsletter)
        first_fire_time(newsletter, trigger, now)
    return triggers


def _sync_newsletter_jobs(
    scheduler: AsyncIOScheduler,
    jobstore: SQLAlchemyJobStore,
    settings: Settings,
    triggers: dict[str, CronTrigger],
    *,
    job: str,
    config_path: str,
) -> None:
    """Bring the stored ``newsletter:*`` jobs in line with the configured newsletters."""
    stored = _stored_jobs(jobstore)
    wanted = {job_id(n.id) for n in settings.newsletters}
    for stale in sorted(stored.keys() - wanted):
        jobstore.remove_job(stale)
        logger.info("removed job %s: its newsletter is no longer configured", stale)
    for newsletter in settings.newsletters:
        _add_newsletter_job(
            scheduler,
            newsletter,
            triggers[newsletter.id],
            stored.get(job_id(newsletter.id)),
            job=job,
            config_path=config_path,
        )


def _add_mailbox_jobs(
    scheduler: AsyncIOScheduler,
    settings: Settings,
    now: datetime,
    *,
    mailbox_job: str,
    bounce_job: str,
    config_path: str,
) -> None:
    """A job in memory per configured mailbox, run at start and every ``interval_minutes``."""
    mailboxes = [
        (settings.unsubscribe_mailbox, mailbox_job, MAILBOX_JOB_ID, "unsubscribe mailbox"),
        (settings.bounces, bounce_job, BOUNCE_JOB_ID, "bounce mailbox"),
    ]
    for config, ref, mailbox_id, name in mailboxes:
        if not config.configured:
            continue
        minutes = config.interval_minutes
        scheduler.add_job(
            ref,
            IntervalTrigger(minutes=minutes, timezone=UTC),
            args=(config_path,),
            id=mailbox_id,
            name=name,
            jobstore="memory",
            next_run_time=now,
            misfire_grace_time=minutes * 60,
            coalesce=True,
            max_instances=1,
        )


def _add_retry_job(
    scheduler: AsyncIOScheduler, settings: Settings, *, retry_job: str, config_path: str
) -> None:
    """The job in memory that sends due deferred deliveries every ``retry.check_minutes``."""
    scheduler.add_job(
        retry_job,
        IntervalTrigger(minutes=settings.retry.check_minutes, timezone=UTC),
        args=(config_path,),
        id=RETRY_JOB_ID,
        name="delivery retries",
        jobstore="memory",
        misfire_grace_time=max(1, int(settings.retry.check_minutes * 60)),
        coalesce=True,
        max_instances=1,
    )


def _add_collect_jobs(
    scheduler: AsyncIOScheduler,
    settings: Settings,
    now: datetime,
    *,
    collect_job: str,
    config_path: str,
) -> None:
    """A job in memory per newsletter with sources, run at start and at its interval."""
    for newsletter in settings.newsletters:
        minutes = newsletter.collect_every_minutes
        if not minutes or not newsletter.sources:
            continue
        scheduler.add_job(
            collect_job,
            IntervalTrigger(minutes=minutes, timezone=UTC),
            args=(config_path, newsletter.id),
            id=collect_job_id(newsletter.id),
            name=f"collect {newsletter.id}",
            jobstore="memory",
            next_run_time=now,
            misfire_grace_time=minutes * 60,
            coalesce=True,
            max_instances=1,
        )


def _stored_jobs(jobstore: SQLAlchemyJobStore) -> dict[str, dict[str, Any] | None]:
    """The stored state of every ``newsletter:*`` job; None where it cannot be read.

    Read from the table directly: APScheduler's own readers import each job's function
    and delete, without asking, every row whose function cannot be imported.
    """
    table = jobstore.jobs_t
    if not inspect(jobstore.engine).has_table(table.name, schema=table.schema):
        return {}
    with jobstore.engine.connect() as connection:
        rows = connection.execute(select(table.c.id, table.c.job_state)).all()
    states: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        if not row.id.startswith(JOB_ID_PREFIX):
            continue
        try:
            states[row.id] = pickle.loads(row.job_state)
        except Exception as exc:  # any unreadable row is replaced with a fresh job below
            logger.warning("cannot read stored job %s (%s); replacing it", row.id, exc)
            states[row.id] = None
    return states


def _add_newsletter_job(
    scheduler: AsyncIOScheduler,
    newsletter: NewsletterSettings,
    trigger: CronTrigger,
    stored: dict[str, Any] | None,
    *,
    job: str,
    config_path: str,
) -> None:
    # Without next_run_time, add_job computes it from now: right for a new job or a new
    # schedule, wrong for an unchanged one (it would skip a run missed during downtime).
    keep: dict[str, Any] = {}
    if stored is not None:
        stored_trigger = stored.get("trigger")
        if type(stored_trigger) is type(trigger) and repr(stored_trigger) == repr(trigger):
            keep["next_run_time"] = stored.get("next_run_time")
        elif stored.get("next_run_time") is None:
            keep["next_run_time"] = None  # paused stays paused
            logger.info(
                "newsletter %s: schedule changed to %r (job is paused)",
                newsletter.id,
                newsletter.schedule,
            )
        else:
            logger.info(
                "newsletter %s: schedule changed to %r; rescheduled from now",
                newsletter.id,
                newsletter.schedule,
            )
    scheduler.add_job(
        job,
        trigger,
        args=(config_path, newsletter.id),
        id=job_id(newsletter.id),
        name=f"newsletter {newsletter.id}",
        misfire_grace_time=newsletter.misfire_grace_time,
        coalesce=True,
        max_instances=1,
        replace_existing=True,
        **keep,
    )


def utc_text(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with a Z, as every time in the log is written.

    The triggers run in each newsletter's zone; printing their times as they come would
    mix offsets in one log.
    """
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _log_job_event(event: Any) -> None:
    if event.code == EVENT_JOB_MAX_INSTANCES:
        logger.warning(
            "job %s is still running; its run due %s was skipped",
            event.job_id,
            ", ".join(utc_text(t) for t in event.scheduled_run_times),
        )
        return
    due = utc_text(event.scheduled_run_time)
    if event.code == EVENT_JOB_EXECUTED:
        logger.info("job %s ran (due %s)", event.job_id, due)
    elif event.code == EVENT_JOB_MISSED:
        logger.warning("job %s missed its run due %s: later than its grace time", event.job_id, due)
    elif event.code == EVENT_JOB_ERROR:
        exc = event.exception
        logger.error(
            "job %s failed (due %s): %s",
            event.job_id,
            due,
            exc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )


class _RunningJobs:
    """Counts submitted job runs that have not finished, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __call__(self, event: Any) -> None:
        # With coalesce each submission carries one run time, hence one closing event.
        if event.code == EVENT_JOB_SUBMITTED:
            self._count += 1
            self._idle.clear()
        else:
            self._count = max(self._count - 1, 0)
            if self._count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


async def run_scheduler(
    settings: Settings,
    *,
    store_url: str,
    config_path: str,
    stop: asyncio.Event | None = None,
    job: str = DEFAULT_JOB,
    mailbox_job: str = MAILBOX_JOB,
    bounce_job: str = BOUNCE_JOB,
    collect_job: str = COLLECT_JOB,
) -> None:
    """Run every newsletter on its schedule until ``stop`` is set (or forever).

    On stop no new run starts; a running one finishes before the scheduler shuts down.
    """
    scheduler = build_scheduler(
        settings,
        store_url=store_url,
        job=job,
        config_path=config_path,
        mailbox_job=mailbox_job,
        bounce_job=bounce_job,
        collect_job=collect_job,
    )
    running = _RunningJobs()
    scheduler.add_listener(
        running, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR
    )
    scheduler.start()
    try:
        _log_next_runs(scheduler, settings)
        await (stop or asyncio.Event()).wait()
        scheduler.pause()
        await running.wait_idle()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        # AsyncIOScheduler.shutdown only queues the work on the event loop.
        while scheduler.running:
            await asyncio.sleep(0)


def _log_next_runs(scheduler: AsyncIOScheduler, settings: Settings) -> None:
    now = datetime.now(UTC)
    if settings.unsubscribe_mailbox.configured:
        logger.info(
            "unsubscribe mailbox: processed now and every %s minutes",
            settings.unsubscribe_mailbox.interval_minutes,
        )
    if settings.bounces.configured:
        logger.info(
            "bounce mailbox: processed now and every %s minutes",
            settings.bounces.interval_minutes,
        )
    for newsletter in settings.newsletters:
        if scheduler.get_job(collect_job_id(newsletter.id)) is not None:
            logger.info(
                "newsletter %s: sources collected now and every %s minutes",
                newsletter.id,
                newsletter.collect_every_minutes,
            )
        job = scheduler.get_job(job_id(newsletter.id))
        due: datetime | None = job.next_run_time if job else None
        if due is None:
            logger.info("newsletter %s: paused", newsletter.id)
        elif due <= now:
            logger.info(
                "newsletter %s: due since %s; runs once now if within %s s",
                newsletter.id,
                utc_text(due),
                newsletter.misfire_grace_time,
            )
        else:
            logger.info(
                "newsletter %s: next run %s",
                newsletter.id,
                utc_text(due),
            )
