"""Several sender processes for one issue, sharing nothing but the ledger.

One Python process spends a core on each message's signature, the socket writes and
the ledger's transactions, so a large issue is sent by one process per core
(``smtp.processes``). The process that runs ``digest send`` plans the ledger and sends
like the others; the helpers it starts only claim rows (see
:meth:`~digest.store.ledger.LedgerStore.claim_deliveries`, the one place where rows
change hands), send them and record the outcomes, exactly as one process does alone.
So the crash rule holds for each of them, and a helper killed with its parent leaves
behind only rows in 'sending' that the next run takes over with their Message-IDs.

The connections, the rate limits and the per-domain limit of ``[smtp]`` are divided
between the processes (:func:`share_of`), so together they never exceed them.

Helpers are started with ``spawn`` (no inherited threads, locks or connections), die
with their parent (``PR_SET_PDEATHSIG`` on Linux, and a watch on the parent's id), and
leave SIGINT and SIGTERM to a shared stop: every process then finishes the messages in
flight, records them, gives back the rows it claimed and did not try, and reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import queue
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from digest.config import RelaySettings, Settings, SmtpSettings
from digest.core.models import Issue
from digest.delivery.relays import connection_slots, open_transport
from digest.delivery.report import DeliveryReport
from digest.delivery.sending import send_rows
from digest.message.personalize import Personalizer
from digest.store import IssueRecord, Store

__all__ = ["Crew", "Link", "sender_processes", "share_of"]

log = logging.getLogger("digest.delivery.senders")

#: Below this many messages to send one process does it all: starting a helper costs
#: about a second of a core (imports, rendering the variants).
SPREAD_AFTER = 2000


def _part(total: int, index: int, count: int, offset: int = 0) -> int:
    """Process ``index``'s part of ``total`` divided between ``count`` (parts add up)."""
    base, extra = divmod(total, count)
    return base + (1 if (index - offset) % count < extra else 0)


def sender_processes(settings: SmtpSettings, requested: int | None = None) -> int:
    """How many processes may send at once within ``settings``' connection limits.

    ``requested`` (default ``settings.processes``; 0 for one per core) is bounded by
    the connections (each process needs one), by ``per_domain_limit`` (each process
    may have one message in flight to a domain) and by the rates (each process's share
    of ``max_per_second`` and ``max_per_hour`` must allow one message a period: a rate
    limiter with less than that takes none).
    """
    wanted = settings.processes if requested is None else requested
    if wanted <= 0:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        wanted = wanted or os.cpu_count() or 1
    if settings.relays:
        slots = sum(r.pool_size or settings.pool_size for r in settings.relays)
    else:
        slots = settings.pool_size
    limit = min(wanted, slots)
    if settings.per_domain_limit:
        limit = min(limit, settings.per_domain_limit)
    for rate in (settings.max_per_second, settings.max_per_hour):
        if rate > 0:
            limit = min(limit, math.floor(rate))
    return max(1, limit)


def share_of(settings: SmtpSettings, index: int, count: int) -> SmtpSettings:
    """The connections and limits of ``[smtp]`` that process ``index`` of ``count`` uses.

    Connections and the per-domain limit are divided in whole parts that add up to the
    setting (``count`` is at most :func:`sender_processes`); the rates are divided
    evenly. With relays each relay's connections are divided, the remainders going to
    different processes, and a relay whose part is nothing is left out of that
    process's group (failover then stays within the process's relays).
    """
    if count <= 1:
        return settings
    relays: tuple[RelaySettings, ...] = ()
    pool_size = _part(settings.pool_size, index, count)
    if settings.relays:
        relays = tuple(
            replace(relay, pool_size=part)
            for n, relay in enumerate(settings.relays)
            if (part := _part(relay.pool_size or settings.pool_size, index, count, n))
        )
    return replace(
        settings,
        pool_size=max(1, pool_size),
        relays=relays,
        max_per_second=settings.max_per_second / count,
        max_per_hour=settings.max_per_hour / count,
        per_domain_limit=(
            _part(settings.per_domain_limit, index, count) if settings.per_domain_limit else 0
        ),
        processes=1,
    )


@dataclass
class Link:
    """What the processes of one send share: a stop, the end of planning, a count."""

    stop: Any  # multiprocessing Event: every process stops taking new rows
    planned: Any  # multiprocessing Event: every recipient has a ledger row
    done: Any  # multiprocessing Value: messages finished by all processes
    results: Any  # multiprocessing Queue: each helper's report, or its error
    attached: Any = None  # RawArray: helper i sets [i - 1] once it has the objects above

    def add_done(self, n: int = 1) -> int:
        with self.done.get_lock():
            self.done.value += n
            return int(self.done.value)


@dataclass
class HelperJob:
    """Everything a helper needs, sent to it once when it starts."""

    settings: Settings
    store_url: str
    newsletter_id: str
    record: IssueRecord
    issue: Issue
    now: datetime
    started: datetime
    index: int
    count: int
    parent: int = field(default_factory=os.getpid)


@dataclass
class HelperResult:
    index: int
    counts: dict[str, Any] | None = None
    error: str | None = None


#: The counts a helper's report adds to the run's report.
MERGED = (
    "sent",
    "failed",
    "deferred",
    "resumed",
    "gave_up",
    "policy",
    "unsubscribed_since",
)


class Crew:
    """The helpers of one send: started, stopped and heard back from by the parent."""

    def __init__(
        self,
        settings: Settings,
        store_url: str,
        newsletter_id: str,
        record: IssueRecord,
        issue: Issue,
        *,
        now: datetime,
        started: datetime,
        count: int,
    ) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.link = Link(
            stop=self._context.Event(),
            planned=self._context.Event(),
            done=self._context.Value("q", 0),
            results=self._context.Queue(),
            attached=self._context.RawArray("b", max(1, count - 1)),
        )
        self._names = _semaphore_names(self.link)
        self._forgetting: asyncio.Task[None] | None = None
        self.count = count
        self._jobs = [
            HelperJob(settings, store_url, newsletter_id, record, issue, now, started, i, count)
            for i in range(1, count)
        ]
        self._processes: list[Any] = []

    def start(self) -> None:
        for job in self._jobs:
            process = self._context.Process(
                target=helper_main,
                args=(job, self.link),
                name=f"digest-sender-{job.index}",
                daemon=True,
            )
            process.start()
            self._processes.append(process)
        self._forgetting = asyncio.ensure_future(self._forget_names())

    async def _forget_names(self) -> None:
        """Unlink the semaphores' names once every helper has opened them.

        A helper opens each semaphore by its name when it starts; after that no name is
        needed, and one left registered is what the resource tracker reports as leaked
        (and removes) when this process is killed outright.
        """
        while not all(self.link.attached) and any(p.is_alive() for p in self._processes):
            await asyncio.sleep(0.05)
        if all(self.link.attached):
            _unlink_names(self._names)

    async def finish(self, *, timeout: float) -> list[HelperResult]:
        """Every helper's result once it has ended; one that died says so.

        Helpers end by themselves when no row is left or the shared stop is set; one
        that has not ended ``timeout`` seconds after the stop is killed (its rows in
        'sending' are taken over by the next run, as its process is gone).
        """
        results: dict[int, HelperResult] = {}
        stopped_at: float | None = None
        loop = asyncio.get_running_loop()
        while len(results) < len(self._processes):
            with contextlib.suppress(queue.Empty):
                found: HelperResult = await asyncio.to_thread(self.link.results.get, True, 0.1)
                results[found.index] = found
                continue
            for job, process in zip(self._jobs, self._processes, strict=True):
                if job.index in results or process.is_alive():
                    continue
                # Ended without a word: its result may still be in the pipe.
                with contextlib.suppress(queue.Empty):
                    late: HelperResult = self.link.results.get(timeout=0.5)
                    results[late.index] = late
                if job.index not in results:
                    results[job.index] = HelperResult(
                        job.index,
                        error=f"sender process {job.index} ended unexpectedly "
                        f"(exit code {process.exitcode}); the rows it held are sent again "
                        "by the next run",
                    )
            if self.link.stop.is_set():
                stopped_at = stopped_at or loop.time()
                if loop.time() - stopped_at > timeout:
                    for process in self._processes:
                        if process.is_alive():
                            process.kill()
        for process in self._processes:
            await asyncio.to_thread(process.join, 5)
        if self._forgetting is not None:
            self._forgetting.cancel()
        self.link.results.close()
        self.link.results.join_thread()
        if not any(process.is_alive() for process in self._processes):
            _stop_resource_tracker()
        return [results[i] for i in sorted(results)]


def _semaphore_names(link: Link) -> list[str]:
    """The names of the POSIX semaphores behind ``link``'s objects (14 of them).

    Read from multiprocessing's private attributes: the standard library offers no
    other way to release a semaphore's name early. Nothing is found where they differ.
    """
    found: list[str] = []
    with contextlib.suppress(AttributeError):
        locks: list[Any] = []
        for event in (link.stop, link.planned):
            cond = event._cond
            locks += [event._flag, cond._lock, cond._sleeping_count, cond._woken_count,
                      cond._wait_semaphore]  # fmt: skip
        locks += [link.done.get_lock(), link.results._rlock, link.results._wlock,
                  link.results._sem]  # fmt: skip
        found = [lock._semlock.name for lock in locks if lock._semlock.name]
    return found


def _unlink_names(names: list[str]) -> None:
    """Remove the semaphores' names now (they stay usable where opened), so that none is
    left for the resource tracker to clean up after a kill, and none leaks."""
    from multiprocessing import resource_tracker, synchronize, util

    gone = set(names)
    cleanup = getattr(synchronize.SemLock, "_cleanup", None)
    # Each name's finalizer would unlink it again at exit: cancel it.
    for finalizer in list(getattr(util, "_finalizer_registry", {}).values()):
        args = getattr(finalizer, "_args", None)
        if args and args[0] in gone and getattr(finalizer, "_callback", None) is cleanup:
            finalizer.cancel()
    for name in names:
        with contextlib.suppress(OSError):
            synchronize.sem_unlink(name)  # type: ignore[attr-defined]
        resource_tracker.unregister(name, "semaphore")


def _stop_resource_tracker() -> None:
    """End multiprocessing's resource tracker and reap it, once no helper is left.

    It is a child of this process and ends when the last process holding its pipe does;
    reaped here, it leaves no zombie behind where the process that adopts orphans does
    not reap them (a container's init). A later crew starts a new one.
    """
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    stop = getattr(tracker, "_stop", None)
    # Started by this process (not inherited from a parent that is itself a helper).
    if stop is not None and getattr(tracker, "_pid", None) is not None:
        with contextlib.suppress(OSError, ChildProcessError):
            stop()


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


async def _watch_parent(parent: int) -> None:
    """Where PR_SET_PDEATHSIG is missing: end at once when the parent is gone."""
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def helper_main(job: HelperJob, link: Link) -> None:
    """A helper's whole life: claim, send and record rows until none is left."""
    _die_with_parent(job.parent)
    if link.attached is not None:
        link.attached[job.index - 1] = 1  # the semaphores are open: their names can go
    # A terminal's Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        counts = asyncio.run(_help(job, link))
        link.results.put(HelperResult(job.index, counts=counts))
    except BaseException as exc:  # reported to the parent, which says it plainly
        link.stop.set()
        link.results.put(HelperResult(job.index, error=str(exc) or type(exc).__name__))
    finally:
        link.results.close()
        link.results.join_thread()


async def _help(job: HelperJob, link: Link) -> dict[str, Any]:
    settings = job.settings
    newsletter = settings.newsletter(job.newsletter_id)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, link.stop.set)
    watcher = asyncio.ensure_future(_watch_parent(job.parent))
    store = Store.open(job.store_url, migrate=False, secret_key=settings.secret_key)
    share = share_of(settings.smtp, job.index, job.count)
    transport = open_transport(share)
    report = DeliveryReport(newsletter.id, job.issue.key, zone=newsletter.zone)
    try:
        await send_rows(
            settings,
            store,
            newsletter,
            job.record,
            report,
            Personalizer(settings, newsletter, job.issue, job.now, count_clicks=True),
            transport,
            started=job.started,
            link=link,
            connections=connection_slots(share),
        )
    finally:
        watcher.cancel()
        await transport.close()
        store.close()
    counts: dict[str, Any] = {name: getattr(report, name) for name in MERGED}
    counts["failures"] = report.failures[:100]
    counts["stopped"] = report.stopped
    counts["not_reached"] = report.not_reached
    return counts


def merge(report: DeliveryReport, results: list[HelperResult], note: Callable[[str], None]) -> None:
    """Add the helpers' counts to ``report``; the first stop or error becomes its stop."""
    for result in results:
        if result.error is not None:
            note(result.error)
            report.stopped = report.stopped or result.error
            continue
        assert result.counts is not None
        for name in MERGED:
            setattr(report, name, getattr(report, name) + result.counts[name])
        report.sent_by.append(result.counts["sent"])
        report.failures.extend(result.counts["failures"])
        report.not_reached = report.not_reached or result.counts["not_reached"]
        if result.counts["stopped"] and report.stopped in (None, "interrupted"):
            report.stopped = result.counts["stopped"]
