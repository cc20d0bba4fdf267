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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import make_msgid

from digest.bounces import return_path
from digest.compose import content_key, render_subject
from digest.config import NewsletterSettings, Settings
from digest.errors import DigestError, SenderRefused, SendError
from digest.mail import MessageError, build_message
from digest.models import DeliveryState, Issue, Message, Recipient, Variant
from digest.relays import connection_slots
from digest.render import personalize, render_variant
from digest.retry import GiveUp, next_step
from digest.segments import cut_for, recipients_for, segment_lists
from digest.store import DeliveryRow, IssueRecord, Store
from digest.tokens import preferences_url, unsubscribe_mailto, unsubscribe_url
from digest.transport import Transport

__all__ = ["Audience", "AudienceCounts", "DeliveryReport", "Personalizer", "audience", "send_issue"]

log = logging.getLogger("digest.deliver")

Progress = Callable[[int, int], None]

#: This many policy refusals (5.7.x at RCPT) in a row stop a run: the relay refuses us.
POLICY_REFUSALS_TO_STOP = 3


@dataclass(kw_only=True)
class AudienceCounts:
    """Who of an issue's audience gets no message in this run, and why.

    A send and a dry run count these the same way (see :func:`audience`).
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
    next_retry: datetime | None = None
    zone: tzinfo = UTC  # in which next_retry is shown

    @property
    def finished(self) -> bool:
        """Nothing of the issue is left to send (every row sent, failed or skipped)."""
        return self.left == 0

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
        if self.stopped:
            text += f"; stopped: {self.stopped}"
        if self.left:
            text += f"; {self.left} left"
            if self.next_retry is not None:
                when = self.next_retry.astimezone(self.zone)
                text += f", next retry due {when:%Y-%m-%d %H:%M:%S %Z}"
        return text


def record_deferral(
    settings: Settings, store: Store, row: DeliveryRow, code: int | None, reply: str
) -> datetime | None:
    """Record a temporary failure of a claimed row: retry later, or fail it for good.

    Returns when the row is due again, or None when it was given up and failed with its
    last reply (after ``retry.max_attempts`` attempts or ``retry.max_age_hours``).
    """
    now = datetime.now(UTC)
    step = next_step(
        settings.retry,
        attempts=row.attempts + 1,  # this attempt's claim counted one more
        first_attempt_at=row.first_attempt_at,
        now=now,
    )
    if isinstance(step, GiveUp):
        store.record_delivery(
            row.id, DeliveryState.FAILED, code=code, reply=f"{reply} ({step.reason})", now=now
        )
        return None
    store.defer_delivery(row.id, code=code, reply=reply, until=step.at, now=now)
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

    @property
    def variants(self) -> int:
        return len(self._variants)

    def variant_for(self, recipient: Recipient) -> Variant | None:
        """The rendered variant this recipient shares with others, or None if empty."""
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
    None while the ledger is not planned yet (a dry run of a new issue).
    """

    to_send: list[tuple[DeliveryRow | None, Recipient]]
    nothing_for_them: list[tuple[DeliveryRow | None, Recipient]]
    unsubscribed_since: list[DeliveryRow]
    subscribed_after: list[Recipient]
    counts: AudienceCounts


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
    to be sent; otherwise they subscribed after the issue went out.
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
        if row.state == DeliveryState.SENT:
            counts.already_sent += 1
        elif row.state == DeliveryState.FAILED:
            counts.refused_before += 1
        elif row.state == DeliveryState.SKIPPED:
            counts.skipped_before += 1
        elif (recipient := recipients.get(row.subscriber_id)) is None:
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


def new_message_id(newsletter: NewsletterSettings, issue_key: str) -> str:
    return make_msgid(idstring=f"{newsletter.id}.{issue_key}", domain=newsletter.sender_domain)


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
) -> DeliveryReport:
    """Send ``issue`` to every recipient not yet sent; record each outcome as it happens.

    Raises nothing for a recipient the server refuses (it is counted and recorded); stops
    early, leaving the rest pending, when the transport becomes unavailable. Rows
    deferred to a later time are left for then. Once ``stop_requested`` is set no new
    message starts; those in flight finish and are recorded. Raises NotApproved, sending
    nothing, for an issue of a newsletter with ``review = "required"`` that no editor
    approved.
    """
    from digest.review import require_approval

    now = now or datetime.now(UTC)
    # Before anything is planned or sent: an issue that awaits review never goes out.
    require_approval(store, newsletter, issue.key)
    report = DeliveryReport(newsletter.id, issue.key, zone=newsletter.zone)
    recipients = current_recipients(store, newsletter)
    report.recipients = len(recipients)
    if record.status == "composed":
        # The issue goes out: its audience is fixed now. Whoever subscribes later gets
        # the next issue, also when this one is resumed after an interruption.
        report.planned = store.plan_deliveries(
            record.id, [(sid, r.subscriber.email, r.segments) for sid, r in recipients.items()]
        )
        store.set_issue_status(record.id, "sending")
    plan = audience(store, newsletter, issue, recipients, record, ledger_open=False)
    for name, value in vars(plan.counts).items():
        setattr(report, name, value)
    for row in plan.unsubscribed_since:
        store.record_delivery(row.id, DeliveryState.SKIPPED, code=None, reply="unsubscribed")
    for skipped, _recipient in plan.nothing_for_them:
        assert skipped is not None
        store.record_delivery(
            skipped.id, DeliveryState.SKIPPED, code=None, reply="nothing for their interests"
        )
    personalizer = Personalizer(settings, newsletter, issue, now)
    # Everything is rendered before the first message goes out: a template error stops
    # the run before anyone got anything, and no MJML compiles between two sends.
    queue: asyncio.Queue[tuple[DeliveryRow, Recipient, Variant]] = asyncio.Queue()
    for pending, recipient in plan.to_send:
        # --- retries: a row deferred to a later time waits for it
        assert pending is not None
        if pending.next_attempt_at is not None and pending.next_attempt_at > datetime.now(UTC):
            report.waiting += 1
            continue
        # --- end retries
        variant = personalizer.variant_for(recipient)
        assert pending is not None and variant is not None  # planned, and not empty
        queue.put_nowait((pending, recipient, variant))
    report.variants = personalizer.variants
    total = queue.qsize()
    done = 0
    stop = asyncio.Event()
    # A row still 'sending' belongs to another run while its claim is younger than this;
    # older, the run that claimed it has stopped without recording an answer.
    lease = timedelta(seconds=2 * settings.smtp.timeout + 30)
    policy_in_a_row = 0

    async def deliver_one(row: DeliveryRow, recipient: Recipient, variant: Variant) -> None:
        # A row tried before keeps its Message-ID: should the server have taken the
        # message although the answer never came back, the repeat carries the same id,
        # which lets receiving systems drop it as a duplicate.
        message_id = row.message_id or new_message_id(newsletter, issue.key)
        if row.state == DeliveryState.SENDING:
            if not store.reclaim_stale_delivery(row.id, datetime.now(UTC) - lease):
                report.in_flight += 1
                return
            report.resumed += 1
        elif not store.claim_delivery(row.id, message_id):
            return  # another run claimed it first
        try:
            message = personalizer.message_for(recipient, variant, message_id)
            message = replace(message, sender=return_path(settings, newsletter, row.id))
        except MessageError as exc:
            store.record_delivery(row.id, DeliveryState.FAILED, code=None, reply=str(exc))
            report.failed += 1
            report.failures.append(f"{row.email}: {exc}")
            return
        try:
            result = await transport.send(message)
        except SendError as exc:
            # The server went away, stopped answering, refuses us as the sender or lacks
            # an extension the setting promised (SMTPUTF8): nothing more is sent in this
            # run. A lost connection or timeout defers the row with backoff; a problem
            # of our own configuration leaves it due at once, for the run after the fix.
            if exc.temporary and not isinstance(exc, SenderRefused):
                defer(row, exc.code, str(exc))
            else:
                store.record_delivery(row.id, DeliveryState.PENDING, code=exc.code, reply=str(exc))
                report.deferred += 1
            report.stopped = str(exc)
            stop.set()
            return
        nonlocal policy_in_a_row
        policy_in_a_row = policy_in_a_row + 1 if result.policy else 0
        if result.ok:
            store.record_delivery(row.id, DeliveryState.SENT, code=result.code, reply=result.reply)
            report.sent += 1
        elif result.policy:
            # Refused by policy: nothing against the address, so it is retried later
            # (and failed, unsuppressed, once retries run out). Several in a row say the
            # relay refuses us (relaying denied).
            report.policy += 1
            defer(row, result.code, result.reply)
            if policy_in_a_row >= POLICY_REFUSALS_TO_STOP:
                report.stopped = (
                    f"{policy_in_a_row} recipients in a row refused by policy, last "
                    f"{result.code} {' '.join(result.reply.split())}; check the relay's "
                    "settings (relaying, authentication)"
                )
                stop.set()
        elif result.temporary:
            defer(row, result.code, result.reply)
        else:
            store.record_delivery(
                row.id, DeliveryState.FAILED, code=result.code, reply=result.reply
            )
            report.failed += 1
            report.failures.append(f"{row.email}: {result.code} {result.reply}")

    def defer(row: DeliveryRow, code: int | None, reply: str) -> None:
        if record_deferral(settings, store, row, code, reply) is None:
            report.failed += 1
            report.gave_up += 1
            report.failures.append(f"{row.email}: {code} {' '.join(reply.split())} (given up)")
        else:
            report.deferred += 1

    async def worker() -> None:
        nonlocal done
        while not stop.is_set():
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            task = asyncio.ensure_future(deliver_one(*item))
            try:
                # A cancelled run lets the message in flight finish and be recorded,
                # so cancelling never leaves a delivered message unrecorded.
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait([task], timeout=settings.smtp.timeout + 5)
                raise
            done += 1
            if progress:
                progress(done, total)

    workers = connection_slots(settings.smtp)

    async def relay_stop() -> None:
        assert stop_requested is not None
        await stop_requested.wait()
        if not stop.is_set():
            report.stopped = report.stopped or "interrupted"
        stop.set()

    watcher = asyncio.ensure_future(relay_stop()) if stop_requested is not None else None
    try:
        # A TaskGroup, unlike gather, waits for every worker when the run is cancelled,
        # so each message in flight is recorded before the cancellation goes on.
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(workers, total or 1))):
                group.create_task(worker())
    except* DigestError as failed:  # e.g. the store went away: report the first, plainly
        raise failed.exceptions[0] from None
    finally:
        if watcher is not None:
            watcher.cancel()
    status = store.delivery_status(record.id, datetime.now(UTC), replies=0)
    report.left, report.next_retry = status.left, status.next_retry
    if not status.left:
        store.set_issue_status(record.id, "sent", sent_at=record.sent_at or now)
    log.info(report.summary())
    return report
