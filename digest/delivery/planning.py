"""Who an issue goes to: its delivery ledger held against the subscribers of now (the
admin overview's audience), and a new issue's ledger planned chunk by chunk as it is sent.

The audience of an issue is fixed when its ledger is planned: until then (status
'composed') every current recipient is planned, a chunk at a time, while the first
chunks are sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from digest.audience.segments import cut_for, recipients_for, segment_lists
from digest.config import NewsletterSettings
from digest.core.models import DeliveryState, Issue, Recipient, Subscriber
from digest.delivery.report import AudienceCounts
from digest.message.personalize import Personalizer
from digest.store import DeliveryRow, IssueRecord, Store
from digest.store.ledger import PlannedRow

__all__ = [
    "PLAN_CHUNK",
    "Audience",
    "Planning",
    "audience",
    "count_finished",
    "current_recipients",
    "planned_rows",
]

#: Subscribers planned into the ledger in one transaction.
PLAN_CHUNK = 1000


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


def planned_rows(
    newsletter: NewsletterSettings, personalizer: Personalizer, chunk: list[Subscriber]
) -> list[PlannedRow]:
    """The ledger rows of ``chunk``'s recipients; one with nothing in the issue for their
    interests is planned skipped."""
    rows = []
    for recipient in recipients_for(newsletter, chunk):
        sid = recipient.subscriber.id
        assert sid is not None
        empty = personalizer.variant_for(recipient) is None
        rows.append(
            PlannedRow(
                sid,
                recipient.subscriber.email,
                recipient.segments,
                "nothing for their interests" if empty else None,
            )
        )
    return rows


class Planning:
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
