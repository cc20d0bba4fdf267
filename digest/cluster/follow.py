"""``digest send`` in a cluster: queue the issue's plan, and with ``--wait`` follow it.

The command composes the issue as on one machine and queues its plan job
(:func:`digest.cluster.enqueue.defer_plan_issue`) in one transaction; the workers plan
and send it. Following it reads the ledger (the only authority on who was sent) and, to
tell whether anything will still happen, the issue's jobs in the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from digest.cluster.app import SEND_SLICE, make_app
from digest.cluster.enqueue import defer_plan_issue, plan_lock
from digest.config import NewsletterSettings, Settings
from digest.delivery.status import IssueStatus, format_status
from digest.issue.prepare import prepare_issue
from digest.issue.review import require_approval
from digest.store import IssueRecord, Store
from digest.store.retries import DeliveryStatus

__all__ = ["Queued", "follow", "queue_send"]

#: Exit codes of ``digest send --wait``, as on one machine (see ``digest send --help``).
DONE, FAILED, LEFT = 0, 1, 75


@dataclass(frozen=True)
class Queued:
    """An issue whose plan was queued; ``job`` None when one was waiting already."""

    newsletter: NewsletterSettings
    record: IssueRecord
    job: int | None


def queue_send(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    week: str | None,
    now: datetime | None = None,
) -> Queued | None:
    """Compose the issue of ``week`` (default: the previous week) and queue its plan;
    None when the week has no articles. Raises NotApproved, queueing nothing, for an
    issue that awaits an editor's approval."""
    now = now or datetime.now(UTC)
    prepared = prepare_issue(store, newsletter, week, now)
    if prepared is None or prepared.record is None:
        return None
    require_approval(store, newsletter, prepared.issue.key)
    with store.engine.begin() as conn:
        job = defer_plan_issue(settings, conn, newsletter.id, prepared.record.key)
    return Queued(newsletter, prepared.record, job)


@dataclass
class _Jobs:
    """The issue's jobs in the queue as one look finds them."""

    planning: bool = False  # its plan waits or runs
    plan_failed: bool = False
    running: int = 0  # slices running now
    waiting: list[Any] = field(default_factory=list)  # slices queued (procrastinate Jobs)
    failed: int = 0  # slices failed since the plan was queued


async def _look(app: Any, queued: Queued, since: int) -> _Jobs:
    record = queued.record
    found = _Jobs()
    manager = app.job_manager
    for job in await manager.list_jobs_async(
        queueing_lock=plan_lock(record.newsletter, record.key)
    ):
        if job.status in ("todo", "doing"):
            found.planning = True
        elif job.status == "failed" and (job.id or 0) >= since:
            found.plan_failed = True
    for status in ("todo", "doing", "failed"):
        for job in await manager.list_jobs_async(task=SEND_SLICE, status=status):
            kwargs = job.task_kwargs
            if (kwargs.get("newsletter"), kwargs.get("week")) != (record.newsletter, record.key):
                continue
            if status == "todo":
                found.waiting.append(job)
            elif status == "doing":
                found.running += 1
            elif (job.id or 0) >= since:
                found.failed += 1
    return found


def _progress(record: IssueRecord, d: DeliveryStatus, jobs: _Jobs) -> str:
    if record.status == "composed":
        return f"{record.newsletter} {record.key}: being planned" if jobs.planning else (
            f"{record.newsletter} {record.key}: queued, waiting for a worker")  # fmt: skip
    total = d.sent + d.failed + d.skipped + d.left
    return (
        f"{record.newsletter} {record.key}: {d.sent} of {total} sent, {d.due} due, "
        f"{d.sending} being sent, {d.waiting} deferred, {d.failed} refused; "
        f"send slices running: {jobs.running}"
    )


async def follow(
    settings: Settings,
    store: Store,
    queued: Queued,
    *,
    echo: Callable[[str], None],
    echo_err: Callable[[str], None],
    stop: asyncio.Event,
    poll: float = 1.0,
    every: float = 2.0,
) -> int:
    """Wait until nothing of the issue is left to send, saying how it goes at most every
    ``every`` seconds; the exit code of ``digest send``:

    - 0: nothing left (every row sent, refused or skipped);
    - 75: rows are left that the cluster sends later: deferred for a retry, or due while
      the relay cannot be reached (its slices wait to try again), or ``stop`` was set
      (SIGTERM, Ctrl-C: the cluster goes on sending);
    - 1: a job of the issue failed with rows left and none queued (the workers' log says
      why; the retry pass queues it again).
    """
    app = make_app(settings)
    since = queued.job or 0
    said, said_at = "", 0.0
    async with app.open_async():
        while True:
            now = datetime.now(UTC)
            record = store.get_issue(queued.record.newsletter, queued.record.key) or queued.record
            d = store.delivery_status(record.id, now, replies=0)
            jobs = await _look(app, queued, since)
            line = _progress(record, d, jobs)
            if line != said and time.monotonic() - said_at >= every:
                echo(line)
                said, said_at = line, time.monotonic()
            code = _verdict(record, d, jobs, now, echo_err)
            if code is not None:
                echo(format_status(IssueStatus(queued.newsletter, record, d), now))
                return code
            if stop.is_set():
                echo_err("stopped waiting: the cluster's workers go on sending the issue")
                return LEFT
            try:
                async with asyncio.timeout(poll):
                    await stop.wait()
            except TimeoutError:
                pass


def _verdict(
    record: IssueRecord,
    d: DeliveryStatus,
    jobs: _Jobs,
    now: datetime,
    echo_err: Callable[[str], None],
) -> int | None:
    """The exit code once the wait is over, or None to go on waiting."""
    if record.status == "composed" or jobs.planning:
        if jobs.plan_failed and not jobs.planning:
            echo_err(f"error: planning {record.newsletter} {record.key} failed; the "
                     "workers' log says why")  # fmt: skip
            return FAILED
        return None
    if not d.left:
        return DONE
    if jobs.running:
        return None
    if jobs.waiting and all(j.scheduled_at and j.scheduled_at > now for j in jobs.waiting):
        problems = [j.task_kwargs.get("relay_problem") for j in jobs.waiting]
        if any(problems):
            when = min(j.scheduled_at for j in jobs.waiting)
            echo_err(
                f"sending stopped: {next(p for p in problems if p)}; {d.due} readers still "
                f"due; the cluster tries again from {when:%H:%M:%S %Z}"
            )
            return LEFT
    if jobs.waiting:
        return None
    if not d.due and not d.sending:  # only rows deferred to a later retry
        return LEFT
    if jobs.failed:
        echo_err(f"error: a send job of {record.newsletter} {record.key} failed with "
                 f"{d.due + d.sending} readers left; the workers' log says why")  # fmt: skip
        return FAILED
    return None  # rows held by a sender that is gone: the retry pass queues a slice
