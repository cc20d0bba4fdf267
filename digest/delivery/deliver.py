"""Drive the delivery ledger of an issue through a Transport.

Every recipient has one ledger row per issue. A row is claimed (``sending``, with its
Message-ID) before the message goes out and its outcome recorded as soon as the server
answers, so a second run sends nothing twice and a run after an interruption sends only
to those not yet sent. Rows an abrupt stop left in ``sending`` are sent again with their
original Message-ID, which lets receiving systems recognise the repeat.

The steps of a send: the report as the ledger stands, the helper processes (if any), the
planning of a new issue's ledger (:mod:`digest.delivery.planning`), the sending itself
(:mod:`digest.delivery.sending`), and the report as the run leaves the ledger. Messages
are built by :class:`~digest.message.personalize.Personalizer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from digest.audience.segments import recipients_for, segment_lists
from digest.config import NewsletterSettings, Settings
from digest.core.models import DeliveryState, Issue, Subscriber
from digest.delivery.holding import in_ledger_thread
from digest.delivery.planning import PLAN_CHUNK, Planning, planned_rows
from digest.delivery.relays import connection_slots, open_transport
from digest.delivery.report import DeliveryReport, Progress
from digest.delivery.senders import SPREAD_AFTER, Crew, merge, sender_processes, share_of
from digest.delivery.sending import send_rows
from digest.delivery.transport import Transport
from digest.issue.review import require_approval
from digest.message.personalize import Personalizer
from digest.store import IssueRecord, Store
from digest.store.ledger import Outcome
from digest.store.retries import DeliveryStatus

__all__ = ["plan_issue", "send_issue"]

log = logging.getLogger("digest.delivery.deliver")


async def send_issue(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    issue: Issue,
    transport: Transport,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    stop_requested: asyncio.Event | None = None,
    processes: int = 1,
    spread_after: int = SPREAD_AFTER,
    audience: bool = True,
) -> DeliveryReport:
    """Send ``issue`` to every recipient not yet sent; record each outcome.

    Recipients and ledger rows are read from the store in chunks, never all at once: a
    new issue's ledger is planned chunk by chunk while the first chunks are sent. Rows
    are claimed (``sending``, with their Message-ID) a chunk at a time before their
    messages go out, and outcomes are recorded in batches within ``FLUSH_SECONDS``.
    Raises nothing for a recipient the server refuses (it is counted and recorded);
    stops early, leaving the rest pending, when the transport becomes unavailable. Rows
    deferred to a later time (see :func:`~digest.delivery.sending.record_deferral`) are
    left for then. Once ``stop_requested`` is set no new message starts; those in flight
    finish and are recorded. A cancelled run does the same and gives the rows it claimed but did not
    send back. Raises NotApproved, sending nothing, for an issue of a newsletter with
    ``review = "required"`` that no editor approved.

    With ``processes`` other than 1 (0: one per core; see
    :func:`~digest.delivery.senders.sender_processes`) and at least ``spread_after`` messages to
    send, helper processes send alongside this one (see :mod:`digest.delivery.senders`); every
    process then opens its own share of ``settings.smtp``'s connections and limits, and
    ``transport`` is not used.

    ``audience``: count in the report who of today's subscribers the issue reaches and
    who subscribed after it went out (two reads of every subscriber once the audience is
    fixed); a cluster's send slice, one of many, leaves that to ``digest status``.
    """
    clock = time.monotonic()
    now = now or datetime.now(UTC)
    # Before anything is planned or sent: an issue that awaits review never goes out.
    require_approval(store, newsletter, issue.key)
    lists = segment_lists(newsletter)
    suppressed = store.suppressed_hashes(newsletter.id)
    # The run takes the rows due when it starts; rows deferred past then wait for a
    # later run (the retry job), and are counted as waiting.
    started = datetime.now(UTC)
    report, before = _report_before(store, newsletter, record, issue, started, lists, suppressed)
    personalizer = Personalizer(settings, newsletter, issue, now, count_clicks=True)
    crew = _crew_for(
        settings, store, newsletter, record, issue, before,
        now=now, started=started, processes=processes, spread_after=spread_after,
    )  # fmt: skip
    planning = _planning(
        store, newsletter, record, report, personalizer, now,
        lists=lists, suppressed=suppressed, crew=crew,
    )  # fmt: skip
    if crew is not None:
        if planning.done:
            crew.link.planned.set()
        transport = open_transport(share_of(settings.smtp, 0, crew.count))
    await _send_with_crew(
        settings, store, newsletter, record, report, personalizer, transport, crew,
        started=started, planning=planning, progress=progress,
        stop_requested=stop_requested, suppressed=suppressed,
    )  # fmt: skip
    await in_ledger_thread(planning.settle)
    _report_after(store, newsletter, record, report, personalizer, planning, now,
                  lists=lists, suppressed=suppressed, audience=audience)  # fmt: skip
    report.seconds = time.monotonic() - clock
    log.debug(report.summary())  # the caller says it (the CLI, the job's log)
    return report


def plan_issue(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    issue: Issue,
    *,
    now: datetime | None = None,
    mark_planned: Callable[[], None] | None = None,
) -> DeliveryReport:
    """Plan ``record``'s whole ledger and send nothing: a row for every current recipient,
    a chunk of subscribers per transaction; then the issue is marked 'sending' (by
    ``mark_planned`` when given: a cluster marks it and queues its send jobs in one
    transaction). Its report counts the recipients and the rows added.

    Safe to run again at any point: rows already in the ledger are left as they are
    (:meth:`~digest.store.Store.plan_rows` adds a row only for a subscriber without one in
    the issue), so a plan interrupted and run again adds each missing recipient once and
    plans nobody twice; an issue no longer 'composed' has its audience fixed already and
    nothing is planned (``mark_planned`` is not called). Raises NotApproved, planning
    nothing, for an issue that awaits an editor's approval.
    """
    now = now or datetime.now(UTC)
    require_approval(store, newsletter, issue.key)
    report = DeliveryReport(newsletter.id, issue.key, zone=newsletter.zone)
    planning = _planning(
        store, newsletter, record, report, Personalizer(settings, newsletter, issue, now), now,
        lists=segment_lists(newsletter), suppressed=store.suppressed_hashes(newsletter.id),
        crew=None, mark_planned=mark_planned,
    )  # fmt: skip
    while planning.next():
        pass
    return report


def _report_before(
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    issue: Issue,
    started: datetime,
    lists: set[str],
    suppressed: set[str],
) -> tuple[DeliveryReport, DeliveryStatus]:
    """The run's report as the ledger stands when it starts, and that standing.

    A deferred row whose reader has unsubscribed since is skipped now, as a dry run
    counts it, not only once it is due.
    """
    report = DeliveryReport(newsletter.id, issue.key, zone=newsletter.zone)
    before = store.delivery_status(record.id, started, replies=0)
    report.already_sent = before.sent
    report.refused_before = before.failed
    report.skipped_before = before.skipped
    report.waiting = before.waiting
    if before.waiting:
        waiting = store.waiting_deliveries(record.id, started)
        still = store.subscribers_by_id(
            [sid for _, sid in waiting], lists, newsletter=newsletter.id, suppressed=suppressed
        )
        reached = {r.subscriber.id for r in recipients_for(newsletter, still.values())}
        gone = [
            Outcome(row_id, DeliveryState.SKIPPED, None, "unsubscribed")
            for row_id, sid in waiting
            if sid not in reached
        ]
        store.record_outcomes(gone)
        report.unsubscribed_since += len(gone)
        report.waiting -= len(gone)
    return report, before


def _crew_for(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    issue: Issue,
    before: DeliveryStatus,
    *,
    now: datetime,
    started: datetime,
    processes: int,
    spread_after: int,
) -> Crew | None:
    """The helper processes that send alongside this one, or None when it sends alone
    (one process asked for or allowed, or fewer than ``spread_after`` messages)."""
    count = sender_processes(settings.smtp, processes) if processes != 1 else 1
    if count <= 1:
        return None
    to_do = before.due + before.sending
    if record.status == "composed":
        to_do += store.count_active_subscribers()
    if to_do < spread_after:
        return None
    return Crew(
        settings,
        store.engine.url.render_as_string(hide_password=False),
        newsletter.id,
        record,
        issue,
        now=now,
        started=started,
        count=count,
    )


def _planning(
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    report: DeliveryReport,
    personalizer: Personalizer,
    now: datetime,
    *,
    lists: set[str],
    suppressed: set[str],
    crew: Crew | None,
    mark_planned: Callable[[], None] | None = None,
) -> Planning:
    """The planning of ``record``'s ledger: every current recipient, a chunk at a time
    as sending goes, while the issue is 'composed'; nothing once its audience is fixed.

    Planned recipients are counted in ``report.recipients``. Once every recipient has a
    row the issue is marked 'sending', by ``mark_planned`` when given.
    """

    def plan(chunk: list[Subscriber]) -> None:
        rows = planned_rows(newsletter, personalizer, chunk)
        report.recipients += len(rows)
        report.planned += store.plan_rows(record.id, rows, now)

    def planned() -> None:
        if mark_planned is None:
            store.set_issue_status(record.id, "sending")
        else:
            mark_planned()
        if crew is not None:
            crew.link.planned.set()

    chunks = (
        store.iter_active_subscribers(
            lists, newsletter=newsletter.id, chunk=PLAN_CHUNK, suppressed=suppressed
        )
        if record.status == "composed"
        else None
    )
    return Planning(chunks, plan, planned)


async def _send_with_crew(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    report: DeliveryReport,
    personalizer: Personalizer,
    transport: Transport,
    crew: Crew | None,
    *,
    started: datetime,
    planning: Planning,
    progress: Progress | None,
    stop_requested: asyncio.Event | None,
    suppressed: set[str],
) -> None:
    """Send in this process, and in the crew's helpers alongside when there is one; the
    helpers' counts are added to ``report`` once they have all ended."""
    ended = False
    try:
        if crew is not None:
            crew.start()
        await send_rows(
            settings,
            store,
            newsletter,
            record,
            report,
            personalizer,
            transport,
            started=started,
            planning=planning,
            link=crew.link if crew is not None else None,
            progress=progress,
            stop_requested=stop_requested,
            connections=connection_slots(share_of(settings.smtp, 0, crew.count)) if crew else None,
            suppressed=suppressed,
        )
        ended = True
    finally:
        if crew is not None:
            if not ended:
                crew.link.stop.set()
            try:
                results = await crew.finish(timeout=settings.smtp.timeout + 10)
            finally:
                await transport.close()
            report.sent_by = [report.sent]
            merge(report, results, lambda problem: log.error("%s", problem))


def _report_after(
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    report: DeliveryReport,
    personalizer: Personalizer,
    planning: Planning,
    now: datetime,
    *,
    lists: set[str],
    suppressed: set[str],
    audience: bool = True,
) -> None:
    """Complete ``report`` from the ledger as the run leaves it; mark the issue sent
    when nothing of it is left to send."""
    # A new issue's recipients were counted as planned.
    if audience and record.status != "composed":
        report.subscribed_after = sum(
            len(chunk)
            for chunk in store.iter_active_subscribers(
                lists, newsletter=newsletter.id, not_in_issue=record.id, suppressed=suppressed
            )
        )
        report.recipients = sum(
            len(chunk)
            for chunk in store.iter_active_subscribers(
                lists, newsletter=newsletter.id, suppressed=suppressed
            )
        )
    status = store.delivery_status(record.id, datetime.now(UTC), replies=0)
    report.skipped = status.skipped - report.skipped_before - report.unsubscribed_since
    report.in_flight = status.sending
    report.variants = personalizer.variants
    report.left, report.next_retry = status.left, status.next_retry
    report.due = status.due
    # A run stopped before the whole audience was planned has not finished the issue
    # even when every planned row is done: the next run plans the rest.
    report.unplanned = record.status == "composed" and not planning.done
    if report.finished:
        store.set_issue_status(record.id, "sent", sent_at=record.sent_at or now)
