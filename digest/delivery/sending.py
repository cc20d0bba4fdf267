"""One sender's loop: claim rows of an issue's ledger, send them, record the outcomes.

The process that runs a send and each of its helpers run this loop alike. The sender
registers in the store with a heartbeat (:class:`~digest.delivery.heartbeat.Heartbeat`) and
holds the rows it claims until it records what the server said about them or gives
them back; no other sender takes them while its heartbeat is fresh (see
:mod:`digest.store.senders`). It holds only a few seconds' worth of rows at its pace
(:class:`~digest.delivery.holding.Hold`) and records outcomes within a fraction of a second
(:class:`~digest.delivery.holding.Outcomes`).

An attempt counts against a reader's retry budget only when a server answered about
that message. When no server can be reached, or the relay refuses us as the sender
(our configuration), the run stops and the rows go back due, untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from digest.audience.segments import recipients_for, segment_lists
from digest.config import NewsletterSettings, Settings
from digest.core.errors import DigestError, SenderRefused, SendError
from digest.core.models import DeliveryState, Message, Recipient, Variant
from digest.delivery.heartbeat import Heartbeat
from digest.delivery.holding import CLAIM_CHUNK, Hold, Outcomes, in_ledger_thread
from digest.delivery.planning import Planning
from digest.delivery.relays import connection_slots
from digest.delivery.report import DeliveryReport, Progress
from digest.delivery.retry import GiveUp, next_step
from digest.delivery.transport import Transport
from digest.mailboxes.bounces import return_path
from digest.message.dkim import signer_for
from digest.message.mail import MessageError
from digest.message.personalize import Personalizer
from digest.store import IssueRecord, Store
from digest.store.ledger import ClaimedRow, MessageIdPattern, Outcome
from digest.store.senders import stale_before

if TYPE_CHECKING:
    from digest.delivery.senders import Link

__all__ = ["POLICY_REFUSALS_TO_STOP", "envelope_sender", "record_deferral", "send_rows"]

#: This many policy refusals (5.7.x at RCPT) in a row stop a run: the relay refuses us.
POLICY_REFUSALS_TO_STOP = 3

T = TypeVar("T")


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


async def send_rows(
    settings: Settings,
    store: Store,
    newsletter: NewsletterSettings,
    record: IssueRecord,
    report: DeliveryReport,
    personalizer: Personalizer,
    transport: Transport,
    *,
    started: datetime,
    planning: Planning | None = None,
    link: Link | None = None,
    progress: Progress | None = None,
    stop_requested: asyncio.Event | None = None,
    connections: int | None = None,
    suppressed: set[str] | None = None,
) -> None:
    """Claim, send and record rows of ``record``'s ledger until none is left to take.

    The loop of one sender process: the one that runs the send (which also plans a
    new issue's ledger, ``planning``) and each of its helpers (``link``) alike. Counts
    go to ``report``. ``connections``: how many messages ``transport`` may have in
    flight (default: all of ``settings.smtp``'s); ``suppressed``: the suppression list's
    hashes for the newsletter, when the caller has read them already.
    """
    if suppressed is None:
        suppressed = store.suppressed_hashes(newsletter.id)
    heartbeat = await in_ledger_thread(lambda: Heartbeat(store))
    try:
        loop = _SenderLoop(
            settings, store, newsletter, record, report, personalizer, transport, heartbeat,
            started=started, planning=planning, link=link, progress=progress,
            stop_requested=stop_requested, suppressed=suppressed,
            connections=max(1, connections or connection_slots(settings.smtp)),
        )  # fmt: skip
        await loop.run()
    finally:
        heartbeat.close()


class _SenderLoop:
    """The tasks of one sender: claim (produce), build, send (workers), record."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        newsletter: NewsletterSettings,
        record: IssueRecord,
        report: DeliveryReport,
        personalizer: Personalizer,
        transport: Transport,
        heartbeat: Heartbeat,
        *,
        started: datetime,
        planning: Planning | None,
        link: Link | None,
        progress: Progress | None,
        stop_requested: asyncio.Event | None,
        suppressed: set[str],
        connections: int,
    ) -> None:
        self.settings, self.store, self.newsletter = settings, store, newsletter
        self.record, self.report, self.personalizer = record, report, personalizer
        self.transport, self.heartbeat, self.started = transport, heartbeat, started
        self.planning, self.link, self.progress = planning, link, progress
        self.stop_requested, self.suppressed = stop_requested, suppressed
        self.lists = segment_lists(newsletter)
        self.signer = signer_for(settings, newsletter.sender_domain)
        self.outcomes = Outcomes(store, heartbeat.id)
        self.hold = Hold(settings.smtp, connections)
        # Rows claimed and checked, waiting to be built: two claims' worth, so that the
        # next claim is read while the last one is built.
        self.queue: asyncio.Queue[tuple[ClaimedRow, Recipient, Variant]] = asyncio.Queue(
            maxsize=2 * CLAIM_CHUNK
        )
        # Messages built (and signed) ahead of their turn: a few per connection, so that
        # the next message is ready when a connection comes free.
        self.ready: asyncio.Queue[tuple[ClaimedRow, Message]] = asyncio.Queue(
            maxsize=4 * connections
        )
        self.claimed_ids: set[int] = set()  # claimed by this sender and not yet settled
        self.stop = asyncio.Event()
        self.producing = self.building = True
        self.workers_left = connections
        self.policy_in_a_row = 0
        self.done = 0
        self.message_ids = MessageIdPattern(
            f"{newsletter.id}.{record.key}", newsletter.sender_domain
        )

    # --- stopping ------------------------------------------------------------------------

    def halt(self) -> None:
        """No new message starts, here nor in the other processes of this send."""
        self.stop.set()
        if self.link is not None:
            self.link.stop.set()

    def stop_for(self, reason: str) -> None:
        self.report.stopped = self.report.stopped or reason
        self.halt()

    async def watch_stops(self) -> None:
        while not self.stop.is_set():
            if self.stop_requested is not None and self.stop_requested.is_set():
                self.stop_for("interrupted")
            elif (lost := self.heartbeat.lost) is not None:
                self.stop_for(lost)
            elif self.link is not None and self.link.stop.is_set():
                self.stop.set()  # another process of this send stopped: so does this one
            else:
                await asyncio.sleep(0.05)

    # --- settling rows -------------------------------------------------------------------

    def settle(self, row: ClaimedRow, state: str, code: int | None, reply: str,
               *, answered: bool = True) -> None:  # fmt: skip
        self.record_outcome(Outcome(row.id, state, code, reply, answered=answered))

    def record_outcome(self, outcome: Outcome) -> None:
        self.claimed_ids.discard(outcome.delivery_id)
        self.outcomes.add(outcome)

    def defer(self, row: ClaimedRow, code: int | None, reply: str) -> None:
        report = self.report
        if record_deferral(self.settings, row, code, reply, self.record_outcome) is None:
            report.failed += 1
            report.gave_up += 1
            report.failures.append(f"{row.email}: {code} {' '.join(reply.split())} (given up)")
        else:
            report.deferred += 1

    # --- claiming ------------------------------------------------------------------------

    def more_coming(self) -> bool:
        """Rows may still be added to the ledger (its planning is not finished)."""
        if self.planning is not None:
            return not self.planning.done
        return self.link is not None and not self.link.planned.is_set()

    def claim(self, after: int, limit: int) -> list[ClaimedRow]:
        claimed = self.store.claim_deliveries(
            self.record.id,
            after_id=after,
            limit=limit,
            stale_before=stale_before(),
            due_by=self.started,
            new_message_id=self.message_ids,
            claimer=self.heartbeat.id,
        )
        # Noted in the thread itself: a cancelled run gives back all it claimed.
        self.claimed_ids.update(row.id for row in claimed)
        return claimed

    async def room(self) -> int | None:
        """How many rows to claim next, once the hold allows; None once stopped."""
        while not self.stop.is_set():
            limit = self.hold.limit()
            room = limit - len(self.claimed_ids)
            if room >= min(CLAIM_CHUNK, max(1, limit // 2)):
                return min(CLAIM_CHUNK, room)
            await asyncio.sleep(0.01)
        return None

    async def takeover_due(self) -> bool:
        """Wait for rows of a silent sender to become free; True to look again.

        A sender that stopped beating (killed on another host) leaves its rows for up to
        the stale bound; the last rows of an issue are worth that wait.
        """
        when = await in_ledger_thread(
            partial(self.store.next_takeover, self.record.id, self.heartbeat.id)
        )
        if when is None:
            return False
        while not self.stop.is_set() and datetime.now(UTC) < when:
            await asyncio.sleep(0.1)
        await in_ledger_thread(self.store.forget_gone_senders)
        return not self.stop.is_set()

    async def produce(self) -> None:
        after = 0
        try:
            while (limit := await self.room()) is not None:
                claimed = await in_ledger_thread(partial(self.claim, after, limit))
                if len(claimed) < limit and self.more_coming():
                    if self.planning is not None:
                        await in_ledger_thread(self.planning.next)  # the ledger runs short
                    elif not claimed:
                        await asyncio.sleep(0.05)  # another process plans more
                    if not claimed:
                        continue
                if not claimed:
                    if await self.takeover_due():
                        after = 0
                        continue
                    return
                after = claimed[-1].id
                if not await self.check(claimed):
                    return
        finally:
            self.producing = False

    async def check(self, claimed: list[ClaimedRow]) -> bool:
        """Skip rows whose reader is gone or has nothing in the issue, queue the rest;
        False once the run stops."""
        current = await in_ledger_thread(
            partial(
                self.store.subscribers_by_id,
                [row.subscriber_id for row in claimed],
                self.lists,
                newsletter=self.newsletter.id,
                suppressed=self.suppressed,
            )
        )
        recipients = {r.subscriber.id: r for r in recipients_for(self.newsletter, current.values())}
        for row in claimed:
            recipient = recipients.get(row.subscriber_id)
            if recipient is None:
                self.report.unsubscribed_since += 1
                self.settle(row, DeliveryState.SKIPPED, None, "unsubscribed", answered=False)
                continue
            variant = self.personalizer.variant_for(recipient)
            if variant is None:
                self.settle(
                    row, DeliveryState.SKIPPED, None, "nothing for their interests",
                    answered=False,
                )  # fmt: skip
                continue
            self.report.resumed += row.resumed
            while self.queue.full():
                if self.stop.is_set():
                    return False
                await asyncio.sleep(0.01)
            self.queue.put_nowait((row, recipient, variant))
        return True

    # --- building and sending ------------------------------------------------------------

    async def build(self) -> None:
        """Build each row's message while the connections wait for the server.

        Signing is most of a message's cost; done here, between the replies, the
        process keeps a core busy with one connection or two, where building in the
        worker left it idle for every round trip.
        """
        try:
            while not self.stop.is_set():
                if self.queue.empty() and not self.producing:
                    return
                item = await _next_item(self.queue, 0.05)
                if item is None:
                    continue
                row, recipient, variant = item
                # A row tried before keeps its Message-ID: should the server have taken
                # the message although the answer never came back, the repeat carries
                # the same id, which lets receiving systems drop it as a duplicate.
                assert row.message_id is not None
                try:
                    message = self.personalizer.fast_message_for(
                        recipient,
                        variant,
                        row.message_id,
                        envelope_from=envelope_sender(self.settings, self.newsletter, row),
                        signer=self.signer,
                    )
                except MessageError as exc:
                    self.settle(row, DeliveryState.FAILED, None, str(exc), answered=False)
                    self.report.failed += 1
                    self.report.failures.append(f"{row.email}: {exc}")
                    continue
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.05):  # not wait_for: see _next_item
                            await self.ready.put((row, message))
                        break
                # Let the replies that came meanwhile be read before the next build.
                await asyncio.sleep(0)
        finally:
            self.building = False

    async def deliver_one(self, row: ClaimedRow, message: Message) -> None:
        report = self.report
        try:
            result = await self.transport.send(message)
        except SendError as exc:
            # Nothing more is sent in this run. When no server answered about this
            # message (none could be reached) or the relay refuses us as the sender
            # (our configuration), the row goes back due with the others, its
            # reader's budget untouched; a connection lost or a timeout in the middle
            # of its transaction is an attempt, deferred with backoff.
            if exc.unsent or isinstance(exc, SenderRefused):
                report.not_reached = report.not_reached or exc.unsent
            else:
                self.defer(row, exc.code, str(exc))
            self.stop_for(str(exc))
            return
        self.policy_in_a_row = self.policy_in_a_row + 1 if result.policy else 0
        if result.ok:
            self.settle(row, DeliveryState.SENT, result.code, result.reply)
            report.sent += 1
        elif result.policy:
            # Refused by policy: nothing against the address, so it is retried later
            # (and failed, unsuppressed, once retries run out). Several in a row say the
            # relay refuses us (relaying denied).
            report.policy += 1
            self.defer(row, result.code, result.reply)
            if self.policy_in_a_row >= POLICY_REFUSALS_TO_STOP:
                self.stop_for(
                    f"{self.policy_in_a_row} recipients in a row refused by policy, last "
                    f"{result.code} {' '.join(result.reply.split())}; check the relay's "
                    "settings (relaying, authentication)"
                )
        elif result.temporary:
            self.defer(row, result.code, result.reply)
        else:
            self.settle(row, DeliveryState.FAILED, result.code, result.reply)
            report.failed += 1
            report.failures.append(f"{row.email}: {result.code} {result.reply}")

    async def worker(self) -> None:
        try:
            await self.work()
        finally:
            self.workers_left -= 1

    async def work(self) -> None:
        while not self.stop.is_set():
            if self.ready.empty() and not self.building:
                return
            if (lost := self.heartbeat.lost) is not None:
                self.stop_for(lost)  # its rows may change hands: start no new message
                return
            await self.outcomes.room()
            item = await _next_item(self.ready, 0.05)
            if item is None:
                continue
            task = asyncio.ensure_future(self.deliver_one(*item))
            try:
                # A cancelled run lets the message in flight finish and be recorded,
                # so cancelling never leaves a delivered message unrecorded.
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait([task], timeout=self.settings.smtp.timeout + 5)
                raise
            self.hold.finished()
            self.done += 1
            link = self.link
            if self.progress:
                total = link.add_done() if link is not None else self.done
                self.progress(total, total + self.queue.qsize() + self.ready.qsize())
            elif link is not None:
                link.add_done()

    async def run(self) -> None:
        watcher = asyncio.ensure_future(self.watch_stops())
        try:
            # A TaskGroup, unlike gather, waits for every worker when the run is
            # cancelled, so each message in flight is recorded before it goes on.
            async with asyncio.TaskGroup() as group:
                group.create_task(self.produce())
                group.create_task(self.build())
                for _ in range(self.workers_left):
                    group.create_task(self.worker())
                group.create_task(self.outcomes.write_now_and_then(lambda: self.workers_left > 0))
        except* DigestError as failed:  # e.g. the store went away: report the first, plainly
            self.halt()
            raise failed.exceptions[0] from None
        finally:
            watcher.cancel()
            self.outcomes.flush()
            if self.claimed_ids:  # claimed but not answered about: back to pending, due
                self.store.release_deliveries(sorted(self.claimed_ids), claimer=self.heartbeat.id)
