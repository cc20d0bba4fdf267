"""The dry run against the real send: the same counts, read in chunks.

Each test sends through a real aiosmtpd server and holds the dry run's counts, taken
just before, against what the send then reports, on SQLite and on PostgreSQL when
configured.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from digest.audience.segments import segment_lists
from digest.core.models import DeliveryState, Subscriber
from digest.delivery.dryrun import DryRunReport
from digest.delivery.report import AudienceCounts, DeliveryReport
from digest.ops import jobs
from tests.delivery import test_send
from tests.delivery.test_send import NOW, WEEK, World
from tests.smtp_server import RecordingServer

#: The demo lists and feeds in a fresh store (see tests/delivery/test_send.py).
world = test_send.world

#: Interests the demo issue has nothing for within the it-leitungen segment (which
#: takes E-Government, IT-Sicherheit and Infrastruktur only).
NOTHING_FOR_THEM = frozenset({"politik"})


def _dry_run(world: World, chunk: int = 1000) -> DryRunReport:
    report = jobs.dry_run(world.settings, world.store, world.newsletter, WEEK, now=NOW, chunk=chunk)
    assert report is not None
    return report


def _counts(report: AudienceCounts) -> dict[str, int]:
    """Who gets no message in this run and why, and who waits or is left to another run."""
    names = [*vars(AudienceCounts()), "waiting", "in_flight"]
    return {name: getattr(report, name) for name in names}


def _sent(report: DeliveryReport) -> tuple[int, int]:
    return report.sent, report.failed


def _would(report: DryRunReport) -> tuple[int, int]:
    return report.would_send, report.would_fail


def _record_id(world: World) -> int:
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    return record.id


@pytest.mark.smtp_server(temp_fail={"m.oezdemir@example.net": "451 4.3.0 Try again later"})
async def test_a_row_deferred_into_the_future_waits_in_the_dry_run_as_in_the_send(
    world: World, smtp_server: RecordingServer
) -> None:
    first = await world.send(smtp_server)
    assert (first.sent, first.deferred) == (13, 1)
    [deferred] = world.store.deliveries(_record_id(world), [DeliveryState.PENDING])
    assert deferred.next_attempt_at is not None and deferred.next_attempt_at > datetime.now(UTC)

    dry = _dry_run(world)
    assert (dry.would_send, dry.waiting, dry.already_sent) == (0, 1, 13)
    assert dry.next_retry == deferred.next_attempt_at
    when = deferred.next_attempt_at.astimezone(world.newsletter.zone)
    assert (
        f"would send 0 messages, 1 deferred earlier, not due yet "
        f"(retried from {when:%Y-%m-%d %H:%M:%S %Z}), 13 already sent before"
    ) in dry.summary()
    received = len(smtp_server.messages)
    again = await world.send(smtp_server)
    assert (again.sent, again.deferred, again.waiting) == (0, 0, 1)
    assert _counts(again) == _counts(dry) and _sent(again) == _would(dry)
    assert len(smtp_server.messages) == received

    # Made due again (`digest deliveries retry`), both count it as one to send.
    world.store.requeue_deliveries(_record_id(world))
    due = _dry_run(world)
    assert (due.would_send, due.waiting, due.next_retry) == (1, 0, None)
    third = await world.send(smtp_server)  # the server still answers 451: deferred again
    assert (third.sent + third.deferred, third.waiting) == (due.would_send, due.waiting)


async def _mixed_audience(world: World) -> dict[str, Any]:
    """An issue whose first run stopped midway, then readers came, went and changed.

    Every kind of count of the next run is there at least once: already sent, refused
    and skipped before, unsubscribed since (a due and a deferred row), subscribed after,
    nothing for their interests, deferred and not due yet, being sent by another run,
    to send, and one message that cannot be built (a UTF-8 address without SMTPUTF8).
    """
    world.store.save_subscriber(
        Subscriber("leer@example.org", "Leer", categories=NOTHING_FOR_THEM), ["it-leitungen"]
    )
    world.store.save_subscriber(Subscriber("jürgen@beispiel.de", "Leser"), ["allgemein"])
    order = world.store.active_subscribers(segment_lists(world.newsletter))
    assert len(order) == 16 and order[-1].email == "jürgen@beispiel.de"
    fresh = _dry_run(world)
    assert (fresh.would_send, fresh.would_fail, fresh.skipped) == (14, 1, 1)
    # One at a time, in the ledger's order: the first refused for good, the second
    # deferred, three accepted, then the connection drops on the sixth (deferred too),
    # and the run stops.
    async with RecordingServer(
        refuse={order[0].email: "550 5.1.1 No such user"},
        temp_fail={order[1].email: "451 4.3.0 Try again later"},
        disconnect_after=3,
    ) as server:
        first = await world.send(server, pool_size=1)
    assert first.stopped and (first.sent, first.failed, first.deferred) == (3, 1, 2)
    issue_id = _record_id(world)
    rows = {row.subscriber_id: row for row in world.store.deliveries(issue_id)}
    assert [rows[s.id].state for s in order[:7] if s.id] == [
        DeliveryState.FAILED,
        DeliveryState.PENDING,
        *[DeliveryState.SENT] * 3,
        DeliveryState.PENDING,
        DeliveryState.PENDING,
    ]
    for gone in (order[1], order[6]):  # a deferred row's reader and a due row's
        assert gone.id is not None
        world.store.unsubscribe(gone.id, world.newsletter.id)
    # Another run holds order[7]'s row right now (its lease has not run out).
    held = rows[order[7].id or 0]
    [claimed] = world.store.claim_deliveries(
        issue_id,
        after_id=held.id - 1,
        limit=1,
        stale_before=datetime(2025, 1, 1, tzinfo=UTC),
        new_message_id=lambda: "<other.run@kommune-digital.example>",
    )
    assert claimed.id == held.id
    changed = next(s for s in order[8:] if s.lists == {"it-leitungen"})
    world.store.save_subscriber(replace(changed, categories=NOTHING_FOR_THEM), [])
    world.store.save_subscriber(Subscriber("neu@example.org", "Neu"), ["allgemein"])
    return {
        "already_sent": 3,
        "refused_before": 1,
        "skipped_before": 1,
        "unsubscribed_since": 2,
        "subscribed_after": 1,
        "skipped": 1,
        "waiting": 1,
        "in_flight": 1,
    }


async def test_the_dry_run_counts_a_mixed_audience_as_the_send_does(
    world: World, smtp_server: RecordingServer
) -> None:
    expected = await _mixed_audience(world)
    dry = _dry_run(world)
    assert _counts(dry) == expected
    assert _would(dry) == (5, 1) and len(dry.failures) == 1
    assert "jürgen@beispiel.de" in dry.failures[0]
    summary = dry.summary()
    for part in (
        "would send 5 messages",
        "1 would fail (the message cannot be built)",
        "1 deferred earlier, not due yet (retried from ",
        "3 already sent before",
        "1 refused in an earlier run (not retried)",
        "1 skipped in an earlier run",
        "2 unsubscribed since the issue went out",
        "1 subscribed after the issue went out",
        "1 skipped (nothing for their interests)",
        "1 being sent by another run, left to it",
    ):
        assert part in summary
    real = await world.send(smtp_server)
    assert _counts(real) == _counts(dry)
    assert _sent(real) == _would(dry) and len(smtp_server.messages) == dry.would_send
    assert real.stopped is None


def _comparable(report: DryRunReport) -> dict[str, Any]:
    # Message-IDs are random and vary by a few bytes in length, and so the largest message.
    return {k: v for k, v in vars(report).items() if k != "largest_message"}


async def test_the_dry_run_reads_in_chunks_with_the_same_result(world: World) -> None:
    # Before the issue goes out: the subscribers alone, two at a time.
    whole, chunked = _dry_run(world, chunk=1000), _dry_run(world, chunk=2)
    assert whole.would_send == 14
    assert _comparable(chunked) == _comparable(whole)
    assert abs(chunked.largest_message - whole.largest_message) < 50
    # After a run: the ledger in chunks (each chunk's readers looked up at once), then
    # who is not in it; chunk sizes that end chunks at every kind of row.
    expected = await _mixed_audience(world)
    reference = _dry_run(world, chunk=1000)
    assert _counts(reference) == expected and _would(reference) == (5, 1)
    for size in (1, 2, 3, 7):
        assert _comparable(_dry_run(world, chunk=size)) == _comparable(reference)
    # The ledger reader: in id order, ``chunk`` rows at a time, every row once.
    issue_id = _record_id(world)
    chunks = list(world.store.iter_deliveries(issue_id, chunk=5))
    assert [len(rows) for rows in chunks] == [5, 5, 5, 1]
    everyone = world.store.deliveries(issue_id)
    assert [row for rows in chunks for row in rows] == everyone
