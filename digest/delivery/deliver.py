"""Drive the delivery ledger of an issue through a Transport.

Every recipient has one ledger row per issue. A row is claimed (``sending``, with its
Message-ID) before the message goes out and its outcome recorded as soon as the server
answers, so a second run sends nothing twice and a run after an interruption sends only
to those not yet sent. Rows an abrupt stop left in ``sending`` are sent again with their
original Message-ID, which lets receiving systems recognise the repeat.

MJML is compiled once per distinct content (issue and cut); per recipient only the
personal fields are filled in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import TypeVar

from digest.audience.segments import cut_for, recipients_for, segment_lists
from digest.audience.tokens import preferences_url, unsubscribe_mailto, unsubscribe_url
from digest.config import NewsletterSettings, Settings
from digest.core.models import DeliveryState, Issue, Message, Recipient, Rule, Subscriber, Variant
from digest.delivery.holding import CLAIM_CHUNK, MAX_UNRECORDED, in_ledger_thread
from digest.delivery.relays import connection_slots, open_transport
from digest.delivery.retry import GiveUp, next_step
from digest.delivery.senders import SPREAD_AFTER, Crew, merge, sender_processes, share_of
from digest.delivery.transport import Transport
from digest.issue.compose import content_key, render_subject
from digest.mailboxes.bounces import return_path
from digest.message.dkim import DkimSigner
from digest.message.mail import build_message
from digest.message.prepared import PreparedVariant
from digest.message.render import personalize, render_variant
from digest.store import DeliveryRow, IssueRecord, Store
from digest.store.ledger import ClaimedRow, Outcome, PlannedRow

__all__ = [
    "CLAIM_CHUNK",
    "MAX_UNRECORDED",
    "Audience",
    "AudienceCounts",
    "DeliveryReport",
    "Personalizer",
    "audience",
    "send_issue",
]

log = logging.getLogger("digest.delivery.deliver")

Progress = Callable[[int, int], None]

#: This many policy refusals (5.7.x at RCPT) in a row stop a run: the relay refuses us.
POLICY_REFUSALS_TO_STOP = 3


@dataclass(kw_only=True)
class AudienceCounts:
    """Who of an issue's audience gets no message in this run, and why.

    A send and a dry run (:func:`digest.delivery.dryrun.dry_run`) count these the same way.
    """

    already_sent: int = 0  # sent in an earlier run
    refused_before: int = 0  # refused for good in an earlier run, not retried
    skipped_before: int = 0  # skipped in an earlier run
    unsubscribed_since: int = 0  # in the issue's ledger, no longer subscribed
    subscribed_after: int = 0  # subscribed after the issue went out: not in its ledger
    skipped: int = 0  # nothing in the issue for their interests

    def audience_parts(self) -> list[str]:
        parts = []
        if self.already_sent:
            parts.append(f"{self.already_sent} already sent before")
        if self.refused_before:
            parts.append(f"{self.refused_before} refused in an earlier run (not retried)")
        if self.skipped_before:
            parts.append(f"{self.skipped_before} skipped in an earlier run")
        if self.unsubscribed_since:
            parts.append(f"{self.unsubscribed_since} unsubscribed since the issue went out")
        if self.subscribed_after:
            parts.append(
                f"{self.subscribed_after} subscribed after the issue went out "
                "(they get the next one)"
            )
        if self.skipped:
            parts.append(f"{self.skipped} skipped (nothing for their interests)")
        return parts


@dataclass
class DeliveryReport(AudienceCounts):
    """The outcome of one send run, one count per kind of outcome."""

    newsletter: str
    issue_key: str
    recipients: int = 0
    planned: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    resumed: int = 0
    in_flight: int = 0
    variants: int = 0
    stopped: str | None = None
    failures: list[str] = field(default_factory=list)
    gave_up: int = 0  # deferred too often or too long: failed with their last reply
    policy: int = 0  # refused by policy at RCPT (5.7.x): deferred, never suppressed
    waiting: int = 0  # deferred by an earlier run, not due yet: not tried in this run
    left: int = 0  # rows not finished after this run (due, waiting or being sent)
    unplanned: bool = False  # stopped before every recipient had a row: more to send
    not_reached: bool = False  # stopped as no server could be reached (rows stay due)
    due: int = 0  # rows left that any run may send now (not deferred, not being sent)
    next_retry: datetime | None = None
    zone: tzinfo = UTC  # in which next_retry is shown
    sent_by: list[int] = field(default_factory=list)  # per sender process, when several

    @property
    def finished(self) -> bool:
        """Nothing of the issue is left to send (every row sent, failed or skipped)."""
        return self.left == 0 and not self.unplanned

    def summary(self) -> str:
        parts = [f"{self.sent} sent"]
        if self.failed:
            parts.append(f"{self.failed} refused")
        if self.gave_up:
            parts.append(f"{self.gave_up} of them given up after retries")
        if self.deferred:
            parts.append(f"{self.deferred} deferred (temporary failure, retried automatically)")
        if self.policy:
            parts.append(f"{self.policy} of them refused by policy (5.7.x; not suppressed)")
        if self.waiting:
            parts.append(f"{self.waiting} deferred earlier, not due yet")
        parts += self.audience_parts()
        if self.resumed:
            parts.append(f"{self.resumed} resumed after an interruption")
        if self.in_flight:
            parts.append(f"{self.in_flight} being sent by another run, left to it")
        text = (
            f"{self.newsletter} {self.issue_key}: {', '.join(parts)}; "
            f"{self.recipients} recipients, {self.variants} distinct variants"
        )
        if len(self.sent_by) > 1:
            text += (
                f"; {len(self.sent_by)} sender processes "
                f"({' + '.join(str(n) for n in self.sent_by)} sent)"
            )
        if self.not_reached:
            text += f"; relay not reached ({self.stopped}); {self.due} readers still due"
        elif self.stopped:
            text += f"; stopped: {self.stopped}"
        if self.unplanned:
            text += "; not every recipient planned yet (the next run goes on)"
        if self.left and not (self.not_reached and self.left == self.due):
            text += f"; {self.left} left"
            if self.next_retry is not None:
                when = self.next_retry.astimezone(self.zone)
                text += f", next retry due {when:%Y-%m-%d %H:%M:%S %Z}"
        return text


def record_deferral(
    settings: Settings,
    row: ClaimedRow,
    code: int | None,
    reply: str,
    record: Callable[[Outcome], None],
    now: datetime | None = None,
) -> datetime | None:
    """Record a temporary failure of a claimed row: retry later, or fail it for good.

    The outcome goes to ``record`` (the run's batched outcomes, written in one
    transaction with the others): deferred, the row is pending and not due before its
    retry time; given up, it is failed with its last reply. Until it is written the row
    stays 'sending', so a run killed before that leaves it to be taken over once its
    sender is gone, never lost. Returns when the row is due again, or None when it was given up
    (after ``retry.max_attempts`` attempts or ``retry.max_age_hours``).
    """
    now = now or datetime.now(UTC)
    step = next_step(
        settings.retry,
        attempts=row.attempts + 1,  # this one: a server answered about the message
        first_attempt_at=row.first_attempt_at or now,
        now=now,
    )
    if isinstance(step, GiveUp):
        record(Outcome(row.id, DeliveryState.FAILED, code, f"{reply} ({step.reason})"))
        return None
    record(Outcome(row.id, DeliveryState.PENDING, code, reply, next_attempt_at=step.at))
    return step.at


class Personalizer:
    """Cuts, renders (once per distinct content) and builds each recipient's message."""

    def __init__(
        self,
        settings: Settings,
        newsletter: NewsletterSettings,
        issue: Issue,
        now: datetime,
        *,
        archive: bool = False,
    ) -> None:
        self.settings = settings
        self.newsletter = newsletter
        self.issue = issue
        self.now = now
        # Variants for the public archive page (see render_variant), never sent.
        self.archive = archive
        self._variants: dict[str, Variant] = {}
        self._by_rules: dict[tuple[Rule, ...], Variant | None] = {}
        self._prepared: dict[str, PreparedVariant] = {}

    @property
    def variants(self) -> int:
        return len(self._variants)

    def variant_for(self, recipient: Recipient) -> Variant | None:
        """The rendered variant this recipient shares with others, or None if empty."""
        # The cut depends on the recipient's rules only: readers with the same rules
        # share it, so it is cut once for them all.
        if recipient.rules in self._by_rules:
            return self._by_rules[recipient.rules]
        found = self._variant_for(recipient)
        self._by_rules[recipient.rules] = found
        return found

    def _variant_for(self, recipient: Recipient) -> Variant | None:
        cut = cut_for(self.issue, recipient)
        if cut.is_empty:
            return None
        key = content_key(cut)
        if key not in self._variants:
            cut = replace(cut, subject=render_subject(self.newsletter, cut))
            self._variants[key] = render_variant(
                self.settings, self.newsletter, cut, archive=self.archive
            )
        return self._variants[key]

    def prepared(self, variant: Variant, signer: DkimSigner | None) -> PreparedVariant:
        """The variant's bytes prepared for many recipients (see digest.message.prepared)."""
        found = self._prepared.get(variant.content_key)
        if found is None:
            found = PreparedVariant(
                self.settings,
                self.newsletter,
                variant,
                now=self.now,
                issue_key=self.issue.key,
                signer=signer,
            )
            self._prepared[variant.content_key] = found
        return found

    def fast_message_for(
        self,
        recipient: Recipient,
        variant: Variant,
        message_id: str,
        *,
        envelope_from: str,
        signer: DkimSigner | None,
    ) -> Message:
        """The message of :meth:`message_for`, from the variant's prepared bytes, signed."""
        subscriber = recipient.subscriber
        sid, nid = subscriber.id or 0, self.newsletter.id
        return self.prepared(variant, signer).message(
            to_addr=subscriber.email,
            to_name=subscriber.name,
            message_id=message_id,
            envelope_from=envelope_from,
            fields={
                "name": subscriber.name,
                "email": subscriber.email,
                "unsubscribe_url": unsubscribe_url(self.settings, nid, sid),
                "preferences_url": preferences_url(self.settings, nid, sid),
            },
            unsubscribe_mailto=unsubscribe_mailto(self.settings, nid, sid),
        )

    def message_for(
        self, recipient: Recipient, variant: Variant, message_id: str | None = None
    ) -> Message:
        subscriber = recipient.subscriber
        sid, nid = subscriber.id or 0, self.newsletter.id
        unsubscribe = unsubscribe_url(self.settings, nid, sid)
        html, text = personalize(
            variant,
            locale=self.newsletter.locale,
            fields={
                "name": subscriber.name,
                "email": subscriber.email,
                "unsubscribe_url": unsubscribe,
                "preferences_url": preferences_url(self.settings, nid, sid),
            },
        )
        return build_message(
            newsletter=self.newsletter,
            settings=self.settings,
            to_addr=subscriber.email,
            to_name=subscriber.name,
            subject=variant.issue.subject,
            html=html,
            text=text,
            unsubscribe_url=unsubscribe,
            unsubscribe_mailto=unsubscribe_mailto(self.settings, nid, sid),
            now=self.now,
            message_id=message_id,
            issue_key=self.issue.key,
        )


@dataclass
class Audience:
    """Who an issue goes to in this run, and who not and why: the ledger held against
    the subscribers of now.

    The audience of an issue is fixed when it goes out (its ledger is planned): a
    reader who subscribes later gets the next issue, one who unsubscribes in between
    gets nothing more. ``to_send`` pairs each recipient with their ledger row, or with
    None while the ledger is not planned yet (the coming issue in the admin overview).
    """

    to_send: list[tuple[DeliveryRow | None, Recipient]]
    nothing_for_them: list[tuple[DeliveryRow | None, Recipient]]
    unsubscribed_since: list[DeliveryRow]
    subscribed_after: list[Recipient]
    counts: AudienceCounts


def count_finished(row: DeliveryRow, counts: AudienceCounts) -> bool:
    """Count ``row`` if no run sends it again (sent, refused or skipped in an earlier
    run); False for a row still to be sent."""
    if row.state == DeliveryState.SENT:
        counts.already_sent += 1
    elif row.state == DeliveryState.FAILED:
        counts.refused_before += 1
    elif row.state == DeliveryState.SKIPPED:
        counts.skipped_before += 1
    else:
        return False
    return True


def audience(
    store: Store,
    newsletter: NewsletterSettings,
    issue: Issue,
    recipients: dict[int, Recipient],
    record: IssueRecord | None,
    *,
    ledger_open: bool,
) -> Audience:
    """Hold ``record``'s ledger against ``recipients``; writes nothing.

    With ``ledger_open`` (the issue has not gone out) recipients not in the ledger are
    to be sent; otherwise they subscribed after the issue went out. Everything is held
    in memory at once and deferred rows count as to send: for the admin overview's
    coming issue; :func:`digest.delivery.dryrun.dry_run` reads in chunks and counts as the send.
    """
    rows = store.deliveries(record.id) if record is not None else []
    result = Audience([], [], [], [], AudienceCounts())
    counts = result.counts

    def place(row: DeliveryRow | None, recipient: Recipient) -> None:
        if cut_for(issue, recipient).is_empty:
            result.nothing_for_them.append((row, recipient))
        else:
            result.to_send.append((row, recipient))

    for row in rows:
        if count_finished(row, counts):
            continue
        if (recipient := recipients.get(row.subscriber_id)) is None:
            result.unsubscribed_since.append(row)
        else:
            place(row, recipient)
    in_ledger = {row.subscriber_id for row in rows}
    for sid, recipient in recipients.items():
        if sid in in_ledger:
            continue
        if ledger_open:
            place(None, recipient)
        else:
            result.subscribed_after.append(recipient)
    counts.unsubscribed_since = len(result.unsubscribed_since)
    counts.subscribed_after = len(result.subscribed_after)
    counts.skipped = len(result.nothing_for_them)
    return result


def current_recipients(store: Store, newsletter: NewsletterSettings) -> dict[int, Recipient]:
    """Everyone the newsletter's segments reach now, by subscriber id."""
    subscribers = store.active_subscribers(segment_lists(newsletter), newsletter=newsletter.id)
    return {
        r.subscriber.id: r
        for r in recipients_for(newsletter, subscribers)
        if r.subscriber.id is not None
    }


#: Subscribers planned into the ledger in one transaction.
PLAN_CHUNK = 1000

T = TypeVar("T")
_in_thread = in_ledger_thread


async def _next_item(queue: asyncio.Queue[T], seconds: float) -> T | None:
    """The queue's next item, or None when none comes within ``seconds``.

    Not ``asyncio.wait_for``: before Python 3.12 it returns the item instead of raising
    when the caller is cancelled just as the item arrives (CPython issue 86296), and a
    worker that missed its cancellation sends on, or waits forever for room among the
    unrecorded outcomes once the task that writes them has been cancelled.
    """
    try:
        async with asyncio.timeout(seconds):
            return await queue.get()
    except TimeoutError:
        return None


def envelope_sender(settings: Settings, newsletter: NewsletterSettings, row: ClaimedRow) -> str:
    """The return path (MAIL FROM) of one delivery: the one place that decides it."""
    return return_path(settings, newsletter, row.id)


class _Planning:
    """The ledger of a new issue, planned a chunk of subscribers at a time.

    Only the process that runs the send plans; ``planned`` is called once every
    recipient has a row (it tells the helpers too).
    """

    def __init__(
        self,
        chunks: Iterator[list[Subscriber]] | None,
        plan: Callable[[list[Subscriber]], None],
        planned: Callable[[], None],
    ) -> None:
        self._chunks = chunks
        self._plan = plan
        self._planned = planned
        self._read: list[Subscriber] | None = None  # read by settle(), not planned yet

    @property
    def done(self) -> bool:
        return self._chunks is None

    def next(self) -> bool:
        """Plan one more chunk; False when every recipient is planned."""
        if self._chunks is None:
            return False
        chunk, self._read = self._read or next(self._chunks, None), None
        if chunk is None:
            self._chunks = None
            self._planned()
            return False
        self._plan(chunk)
        return True

    def settle(self) -> None:
        """After a stop: note whether every recipient is planned (the chunk planned last
        may have been the last one, which only the next read tells); plans nothing."""
        if self._chunks is None or self._read is not None:
            return
        self._read = next(self._chunks, None)
        if self._read is None:
            self._chunks = None
            self._planned()


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
) -> DeliveryReport:
    """Send ``issue`` to every recipient not yet sent; record each outcome.

    Recipients and ledger rows are read from the store in chunks, never all at once: a
    new issue's ledger is planned chunk by chunk while the first chunks are sent. Rows
    are claimed (``sending``, with their Message-ID) a chunk at a time before their
    messages go out, and outcomes are recorded in batches within ``FLUSH_SECONDS``.
    Raises nothing for a recipient the server refuses (it is counted and recorded);
    stops early, leaving the rest pending, when the transport becomes unavailable. Rows
    deferred to a later time (see :func:`record_deferral`) are left for then. Once
    ``stop_requested`` is set no new message starts; those in flight finish and are
    recorded. A cancelled run does the same and gives the rows it claimed but did not
    send back. Raises NotApproved, sending nothing, for an issue of a newsletter with
    ``review = "required"`` that no editor approved.

    With ``processes`` other than 1 (0: one per core; see
    :func:`~digest.delivery.senders.sender_processes`) and at least ``spread_after`` messages to
    send, helper processes send alongside this one (see :mod:`digest.delivery.senders`); every
    process then opens its own share of ``settings.smtp``'s connections and limits, and
    ``transport`` is not used.
    """
    from digest.delivery.sending import send_rows
    from digest.issue.review import require_approval

    now = now or datetime.now(UTC)
    # Before anything is planned or sent: an issue that awaits review never goes out.
    require_approval(store, newsletter, issue.key)
    report = DeliveryReport(newsletter.id, issue.key, zone=newsletter.zone)
    lists = segment_lists(newsletter)
    suppressed = store.suppressed_hashes(newsletter.id)
    # The run takes the rows due when it starts; rows deferred past then wait for a
    # later run (the retry job), and are counted as waiting.
    started = datetime.now(UTC)
    before = store.delivery_status(record.id, started, replies=0)
    report.already_sent = before.sent
    report.refused_before = before.failed
    report.skipped_before = before.skipped
    report.waiting = before.waiting
    if before.waiting:
        # A deferred row whose reader has unsubscribed since is skipped now, as a dry
        # run counts it, not only once it is due.
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
    personalizer = Personalizer(settings, newsletter, issue, now)
    planned_recipients = 0

    def plan(chunk: list[Subscriber]) -> None:
        nonlocal planned_recipients
        rows = []
        for recipient in recipients_for(newsletter, chunk):
            sid = recipient.subscriber.id
            assert sid is not None
            planned_recipients += 1
            empty = personalizer.variant_for(recipient) is None
            rows.append(
                PlannedRow(
                    sid,
                    recipient.subscriber.email,
                    recipient.segments,
                    "nothing for their interests" if empty else None,
                )
            )
        report.planned += store.plan_rows(record.id, rows, now)

    crew: Crew | None = None

    def planned() -> None:
        store.set_issue_status(record.id, "sending")
        if crew is not None:
            crew.link.planned.set()

    # The audience of an issue is fixed when its ledger is planned: until then (status
    # 'composed') every current recipient is planned, chunk by chunk, as sending goes.
    planning = _Planning(
        store.iter_active_subscribers(
            lists, newsletter=newsletter.id, chunk=PLAN_CHUNK, suppressed=suppressed
        )
        if record.status == "composed"
        else None,
        plan,
        planned,
    )
    count = sender_processes(settings.smtp, processes) if processes != 1 else 1
    if count > 1:
        to_do = before.due + before.sending
        if record.status == "composed":
            to_do += store.count_active_subscribers()
        if to_do >= spread_after:
            crew = Crew(
                settings,
                store.engine.url.render_as_string(hide_password=False),
                newsletter.id,
                record,
                issue,
                now=now,
                started=started,
                count=count,
            )
            if planning.done:
                crew.link.planned.set()
            transport = open_transport(share_of(settings.smtp, 0, count))
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
    await _in_thread(planning.settle)
    if record.status == "composed":
        report.recipients = planned_recipients
    else:
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
    log.debug(report.summary())  # the caller says it (the CLI, the job's log)
    return report
