"""An issue's send in a cluster: planned once, then sent in slices, one per slot at a time.

The jobs (registered in :mod:`digest.cluster.tasks`):

- :func:`run_newsletter_job`, the scheduled run: what ``digest run`` does (collect,
  approved issues that wait, the review request; :func:`digest.ops.jobs.scheduled_weeks`),
  except that each issue to send is queued to be planned rather than sent.
- :func:`plan_issue_job`: plans the issue's whole ledger and sends nothing
  (:func:`digest.delivery.deliver.plan_issue`); then, in one transaction, marks the issue
  'sending' and queues one send slice per slot. A plan run twice or interrupted and run
  again plans nobody twice (a ledger row is added only where the reader has none).
- :func:`send_slice_job`: sends the issue for ``cluster.slice_seconds`` with its slot's
  share of the relay, then queues its successor (same slot) while rows are left to take.
- :func:`retry_pass_job`: what ``digest run``'s retry pass does on one machine: for every
  unfinished issue with rows due, makes sure a slice waits on every slot.

Who was sent is decided by the ledger alone, never by the jobs: rows are claimed under
``FOR UPDATE SKIP LOCKED`` by a sender with a heartbeat and taken over only once it is
gone (:mod:`digest.store.senders`), so a job run twice, or retried after its worker was
killed, sends nobody twice.

**Slots.** There are K = :func:`send_slot_count` slots (``cluster.send_slots``, bounded
as :func:`~digest.delivery.senders.sender_processes` bounds processes). A slice of slot k
is queued with the lock ``send-slot:k`` on the "send" queue: Procrastinate runs one job
of a lock at a time across the cluster, in the order they were queued, so at most K
slices send at once whatever the number of issues sending, and two issues sending at
once take turns on each slot, a slice each. Each slot sends with
:func:`~digest.delivery.senders.share_of` ``(smtp, k, K)``. A slice also carries the
queueing lock ``slice:NEWSLETTER:WEEK:k``: at most one waits per issue and slot, however
often the retry pass or ``digest send`` asks.

**Relay limits across the cluster.**

- Connections (``smtp.pool_size``, each relay's ``pool_size``) and
  ``per_domain_limit`` hold for the cluster as a whole: the slots' parts add up to the
  setting and a slot runs one slice at a time.
- ``max_per_second``: each slot keeps to ``max_per_second / K`` with a rate limiter that
  starts empty with each slice, which may therefore begin with one second's worth at
  once. Over a span of T seconds the cluster sends at most ``max_per_second × (T + T /
  slice_seconds + 1)``: within 4 % of the setting with the default 30 s slices.
- ``max_per_hour`` holds per slot and per slice only, not for the cluster: each slice
  starts a limiter of ``max_per_hour / K`` afresh and may send that many at once, so in
  an hour the cluster may send up to ``max_per_hour × (3600 / slice_seconds + 1)``
  (bounded in practice by ``max_per_second``). Where a relay enforces an hourly quota,
  set ``max_per_second`` to the quota divided by 3600: that one holds.
- A relay that cannot be reached: the slice stops, its rows stay due and untouched, and
  its successor is queued to run after a wait that doubles from ``retry.check_minutes``
  up to five minutes (as ``digest run`` waits, :func:`digest.ops.jobs.relay_backoff`).
  It keeps its slot's lock meanwhile: the slot's other slices wait behind it.

**A worker killed mid-slice.** Its sender's rows stay 'sending' until its heartbeat is
stale (at once on the same host, where the process is seen to be gone); the other
slots' slices then take them over, and its job is retried once the worker has been
silent for ``cluster.stalled_seconds``. The readers who may get the issue twice are
those whose message the relay accepted but whose outcome was not yet recorded: at most
``MAX_UNRECORDED`` (:mod:`digest.delivery.holding`) plus one message in flight per
connection of the slot (a connection carries one message at a time; pipelining puts one
message's commands in one write). Each repeat carries its first Message-ID.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from digest.cluster.app import SEND_SLICE, defer
from digest.cluster.enqueue import defer_plan_issue
from digest.config import Settings
from digest.delivery.deliver import plan_issue, send_issue
from digest.delivery.relays import open_transport
from digest.delivery.report import DeliveryReport
from digest.delivery.senders import sender_processes, share_of
from digest.issue.prepare import prepare_issue
from digest.issue.review import is_approved
from digest.ops.jobs import relay_backoff, scheduled_weeks
from digest.store import IssueRecord, Store

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from digest.cluster.tasks import Worker

__all__ = [
    "defer_slices",
    "ensure_slices",
    "plan_issue_job",
    "retry_pass_job",
    "run_newsletter_job",
    "send_slice_job",
    "send_slot_count",
    "slice_lock",
    "slot_lock",
]

log = logging.getLogger("digest.cluster")


def send_slot_count(settings: Settings) -> int:
    """K: how many send slices run at once across the cluster."""
    return sender_processes(settings.smtp, settings.cluster.send_slots)


def slot_lock(slot: int) -> str:
    """The lock of every slice of ``slot``: one runs at a time, cluster-wide."""
    return f"send-slot:{slot}"


def slice_lock(newsletter: str, week: str, slot: int) -> str:
    """The queueing lock of an issue's slices of ``slot``: one waits at a time."""
    return f"slice:{newsletter}:{week}:{slot}"


def defer_slices(
    settings: Settings,
    connection: Connection,
    newsletter: str,
    week: str,
    slots: Iterable[int],
    *,
    wait: float = 0,
    relay_problem: str | None = None,
) -> int:
    """Queue a slice of the issue for each of ``slots`` in ``connection``'s transaction,
    to run after ``wait`` seconds; how many were queued (none where one waits already).

    ``wait`` and ``relay_problem`` go with the job too: its successor's wait doubles
    while the relay stays out of reach, and ``digest send --wait`` says why it waits.
    """
    queued = 0
    for slot in slots:
        job = defer(
            settings, connection, SEND_SLICE,
            lock=slot_lock(slot), queueing_lock=slice_lock(newsletter, week, slot),
            queue="send", schedule_in={"seconds": wait} if wait else None,
            newsletter=newsletter, week=week, slot=slot, backoff=wait,
            relay_problem=relay_problem,
        )  # fmt: skip
        queued += job is not None
    return queued


def ensure_slices(settings: Settings, store: Store, record: IssueRecord, now: datetime) -> int:
    """Queue a slice on every slot for an issue being sent that has rows to take (and
    one, which marks it sent, for an issue with nothing left); how many were queued."""
    if store.takeable_deliveries(record.id, now):
        slots: Iterable[int] = range(send_slot_count(settings))
    elif not store.delivery_status(record.id, now, replies=0).left:
        slots = range(1)
    else:
        return 0  # rows deferred to later, or held by live senders
    with store.engine.begin() as conn:
        return defer_slices(settings, conn, record.newsletter, record.key, slots)


# --- the jobs ----------------------------------------------------------------------------


async def run_newsletter_job(worker: Worker, newsletter: str, due: str) -> None:
    """The scheduled run of ``newsletter`` that fell due at ``due`` (ISO 8601, for the
    log): collect, ask for a review where one is needed, and queue the plan of every
    issue to send. Like ``digest run``, it works on the time it runs: a run that starts
    late (within the misfire grace time) composes the week before now."""
    settings, store = worker.settings, worker.store
    chosen = settings.newsletter(newsletter)
    weeks = await scheduled_weeks(settings, store, chosen, datetime.now(UTC))
    with store.engine.begin() as conn:
        for week in weeks:
            defer_plan_issue(settings, conn, newsletter, week)
    for week in weeks:
        log.info("%s %s: run due %s; queued to be planned and sent", newsletter, week, due)


async def plan_issue_job(worker: Worker, newsletter: str, week: str) -> None:
    """Compose the issue if need be, plan its whole ledger, then mark it 'sending' and
    queue its slices in one transaction (see the module's docstring)."""
    settings, store = worker.settings, worker.store
    chosen = settings.newsletter(newsletter)
    now = datetime.now(UTC)
    prepared = await asyncio.to_thread(prepare_issue, store, chosen, week, now)
    if prepared is None or prepared.record is None:
        log.info("%s %s: no articles in that week; nothing to send", newsletter, week)
        return
    record, count = prepared.record, send_slot_count(settings)

    def mark_planned() -> None:
        with store.engine.begin() as conn:
            store.set_issue_status(record.id, "sending", connection=conn)
            defer_slices(settings, conn, newsletter, record.key, range(count))

    report = await asyncio.to_thread(
        plan_issue, settings, store, chosen, record, prepared.issue,
        now=now, mark_planned=mark_planned,
    )  # fmt: skip
    if record.status == "composed":
        log.info(
            "%s %s: planned for %d recipients (%d rows added); %d send slots queued",
            newsletter, record.key, report.recipients, report.planned, count,
        )  # fmt: skip
    elif record.status == "sending":  # planned before: make sure its slices are queued
        queued = await asyncio.to_thread(ensure_slices, settings, store, record, now)
        log.info("%s %s: planned before; %d send slices queued", newsletter, record.key, queued)
    else:
        log.info("%s %s: sent already; nothing to plan", newsletter, record.key)


async def _stop_after(stop: asyncio.Event, stopping: asyncio.Event, seconds: float) -> None:
    """Set ``stop`` after ``seconds``, or as soon as the worker is ``stopping``."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass
    stop.set()


async def send_slice_job(
    worker: Worker,
    newsletter: str,
    week: str,
    slot: int,
    backoff: float = 0,
    relay_problem: str | None = None,
) -> None:
    """Send the issue for ``cluster.slice_seconds`` (less when the worker stops) with
    slot ``slot``'s share of the relay, then queue the slot's next slice if rows are left.

    ``backoff``: the wait before this slice, when the one before it could not reach the
    relay (``relay_problem`` said why).
    """
    settings, store = worker.settings, worker.store
    count = send_slot_count(settings)
    if slot >= count:
        log.warning("%s %s: no send slot %d (there are %d now); this slice sends nothing",
                    newsletter, week, slot, count)  # fmt: skip
        return
    chosen = settings.newsletter(newsletter)
    now = datetime.now(UTC)
    prepared = await asyncio.to_thread(prepare_issue, store, chosen, week, now, save=False)
    record = prepared.record if prepared is not None else None
    if prepared is None or record is None or record.status != "sending":
        # Not planned yet (its plan queues the slices), or sent already.
        log.info("%s %s: not being sent; slice of slot %d has nothing to do",
                 newsletter, week, slot)  # fmt: skip
        return
    share = share_of(settings.smtp, slot, count)
    stop = asyncio.Event()
    timer = asyncio.create_task(_stop_after(stop, worker.stopping, settings.cluster.slice_seconds))
    transport = open_transport(share)
    try:
        report = await send_issue(
            replace(settings, smtp=share), store, chosen, record, prepared.issue, transport,
            now=now, stop_requested=stop, processes=1, audience=False,
        )  # fmt: skip
    finally:
        timer.cancel()
        await transport.close()
    await asyncio.to_thread(_after_slice, settings, store, record, slot, report, backoff)


def _after_slice(
    settings: Settings,
    store: Store,
    record: IssueRecord,
    slot: int,
    report: DeliveryReport,
    backoff: float,
) -> None:
    """Queue the slot's next slice when rows are left to take: at once, or after a
    growing wait when the relay could not be used."""
    where = f"{record.newsletter} {record.key}, slot {slot}"
    done = f"{report.sent} sent in this slice" + "".join(
        f", {n} {what}"
        for n, what in ((report.failed, "refused"), (report.deferred, "deferred"),
                        (report.resumed, "resumed after an interruption"))
        if n
    )  # fmt: skip
    if report.finished:
        d = store.delivery_status(record.id, datetime.now(UTC), replies=0)
        log.info("%s: %s; the issue has gone out: %d sent, %d refused, %d skipped in all",
                 where, done, d.sent, d.failed, d.skipped)  # fmt: skip
        return
    if report.stopped not in (None, "interrupted"):  # not by the slice's end: the relay
        wait = relay_backoff(backoff, settings.retry.check_minutes * 60)
        log.error("%s: sending stopped: %s; the slot tries again in %.0f s",
                  where, report.stopped, wait)  # fmt: skip
        with store.engine.begin() as conn:
            defer_slices(settings, conn, record.newsletter, record.key, [slot], wait=wait,
                         relay_problem=report.stopped)  # fmt: skip
        return
    if backoff and report.sent:
        log.info("%s: relay reached again after a wait of %.0f s", where, backoff)
    if store.takeable_deliveries(record.id):
        with store.engine.begin() as conn:
            defer_slices(settings, conn, record.newsletter, record.key, [slot])
        log.info("%s: %s; the slot goes on", where, done)
    else:
        log.info("%s: %s; nothing left for the slot to take", where, done)


async def retry_pass_job(worker: Worker) -> None:
    """For every unfinished issue of the configured newsletters: queue its plan when its
    planning stopped part-way, else a slice on every slot when rows are due."""
    settings, store = worker.settings, worker.store
    await asyncio.to_thread(_retry_pass, settings, store)


def _retry_pass(settings: Settings, store: Store) -> None:
    configured = {n.id: n for n in settings.newsletters}
    now = datetime.now(UTC)
    for newsletter, key in store.unfinished_issues(list(configured)):
        record = store.get_issue(newsletter, key)
        if record is None or not is_approved(store, configured[newsletter], key):
            continue
        if record.status == "composed":
            with store.engine.begin() as conn:
                if defer_plan_issue(settings, conn, newsletter, key) is not None:
                    log.info("%s %s: planning stopped part-way; queued again", newsletter, key)
        elif queued := ensure_slices(settings, store, record, now):
            log.info("%s %s: rows due; %d send slices queued", newsletter, key, queued)
