"""What each job does: thin tasks that open nothing of their own and call the modules
that do the work (``tick``, ``sending``, ``chores``).

Every task takes only JSON values (names, weeks, slots), never rows or readers: a job is
coarse, and what it acts on is read from the store when it runs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from digest.cluster import names

if TYPE_CHECKING:
    import procrastinate

    from digest.config import Settings
    from digest.store import Store

__all__ = ["register", "Worker"]

log = logging.getLogger("digest.cluster")


class Worker:
    """What the jobs of one worker process share: the settings, one store, and the
    event set when the worker is asked to stop (a send slice then ends early, recording
    what is in flight)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from digest.cluster.schema import open_cluster_store

            self._store = open_cluster_store(self.settings)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _worker(context: Any) -> Worker:
    worker: Worker = context.additional_context["digest"]
    return worker


def register(app: procrastinate.App, settings: Settings) -> None:
    """Register digest's tasks on ``app`` (a worker's)."""

    @app.periodic(cron="* * * * *", periodic_id="tick")
    @app.task(name=names.TICK, pass_context=True, lock=names.TICK, queueing_lock=names.TICK,
              priority=10)  # fmt: skip
    async def tick(context: Any, timestamp: int) -> None:
        from digest.cluster.tick import run_tick

        worker = _worker(context)
        await run_tick(worker.settings, worker.store, now=datetime.now(UTC))

    @app.periodic(cron="* * * * *", periodic_id="retry-stalled")
    @app.task(name=names.RETRY_STALLED, pass_context=True, lock=names.RETRY_STALLED,
              queueing_lock=names.RETRY_STALLED, priority=10)  # fmt: skip
    async def retry_stalled(context: Any, timestamp: int) -> None:
        await retry_stalled_jobs(context.app, settings.cluster.stalled_seconds)

    @app.periodic(cron="17 3 * * *", periodic_id="remove-old-jobs")
    @app.task(name="digest.remove_old_jobs", pass_context=True, queueing_lock="remove-old-jobs")
    async def remove_old_jobs(context: Any, timestamp: int) -> None:
        await context.app.job_manager.delete_old_jobs(nb_hours=24 * 14, include_failed=False)

    @app.task(name=names.RUN_NEWSLETTER, pass_context=True)
    async def run_newsletter(context: Any, newsletter: str, due: str) -> None:
        from digest.cluster.sending import run_newsletter_job

        await run_newsletter_job(_worker(context), newsletter, due)

    @app.task(name=names.COLLECT_HOST, pass_context=True)
    async def collect_host(context: Any, host: str, sources: list[list[str]]) -> None:
        from digest.cluster.chores import collect_host_job

        await collect_host_job(_worker(context), host, sources)

    @app.task(name=names.PLAN_ISSUE, pass_context=True)
    async def plan_issue(context: Any, newsletter: str, week: str) -> None:
        from digest.cluster.sending import plan_issue_job

        await plan_issue_job(_worker(context), newsletter, week)

    @app.task(name=names.SEND_SLICE, pass_context=True, queue="send")
    async def send_slice(context: Any, newsletter: str, week: str, slot: int,
                         backoff: float = 0, relay_problem: str | None = None) -> None:  # fmt: skip
        from digest.cluster.sending import send_slice_job

        await send_slice_job(_worker(context), newsletter, week, slot, backoff, relay_problem)

    @app.task(name=names.RETRY_PASS, pass_context=True)
    async def retry_pass(context: Any) -> None:
        from digest.cluster.sending import retry_pass_job

        await retry_pass_job(_worker(context))

    @app.task(name=names.MAILBOX, pass_context=True)
    async def mailbox(context: Any, kind: str) -> None:
        from digest.cluster.chores import mailbox_job

        await mailbox_job(_worker(context), kind)

    @app.task(name=names.MAIL_QUEUE, pass_context=True)
    async def mail_queue(context: Any) -> None:
        from digest.cluster.chores import mail_queue_job

        await mail_queue_job(_worker(context))


async def retry_stalled_jobs(app: procrastinate.App, seconds: float) -> int:
    """Put the jobs of workers silent for ``seconds`` (killed, machine gone) back in the
    queue; how many. The ledger takes over their rows once their senders' heartbeats
    are stale, so a retried send slice sends none of its messages twice."""
    import procrastinate

    stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=seconds)
    count = 0
    for job in stalled:
        log.warning("retrying job %s (%s): its worker stopped answering", job.id, job.task_name)
        try:
            await app.job_manager.retry_job(job)
        except procrastinate.exceptions.UniqueViolation:
            # A job with the same queueing lock waits already (a send slice the retry
            # pass queued meanwhile) and does the same work: this one ends here.
            await app.job_manager.finish_job(
                job, procrastinate.jobs.Status.ABORTED, delete_job=False
            )
            continue
        count += 1
    return count
