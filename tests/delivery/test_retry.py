"""Deferred deliveries are retried by themselves, with backoff, until they give up.

The policy as a pure function, then the whole path against a real aiosmtpd server that
defers chosen recipients: due rows only, every unfinished issue, attempts and age.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from digest.config import RetrySettings
from digest.core.errors import DigestError
from digest.core.models import DeliveryState
from digest.delivery.report import DeliveryReport
from digest.delivery.retry import JITTER, GiveUp, Retry, backoff, next_step
from digest.delivery.status import format_status, issue_statuses, requeue
from digest.delivery.transport import SmtpPool
from digest.ops import jobs
from digest.store import schema as t
from digest.store.ledger import PlannedRow
from tests.delivery.test_send import NOW, WEEK, World
from tests.delivery.test_send import world as world  # noqa: F401  (the fixture)
from tests.smtp_server import RecordingServer

POLICY = RetrySettings(first_minutes=5, max_minutes=60, max_attempts=6, max_age_hours=72)
T0 = datetime(2025, 2, 3, 7, 0, tzinfo=UTC)
DEFERRED = "m.oezdemir@example.net"


def test_backoff_doubles_from_the_first_wait_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    for attempts, minutes in [(1, 5), (2, 10), (3, 20), (4, 40), (5, 60), (9, 60)]:
        for _ in range(20):
            wait = backoff(POLICY, attempts, rng).total_seconds() / 60
            assert minutes <= wait <= minutes * (1 + JITTER)
    waits = {backoff(POLICY, 1, rng) for _ in range(20)}
    assert len(waits) > 10  # spread out, not all at once


def test_next_step_gives_up_after_max_attempts_and_max_age() -> None:
    step = next_step(POLICY, attempts=1, first_attempt_at=T0, now=T0)
    assert isinstance(step, Retry) and T0 + timedelta(minutes=5) <= step.at
    assert next_step(POLICY, attempts=6, first_attempt_at=T0, now=T0) == GiveUp(
        "gave up after 6 attempts"
    )
    late = T0 + timedelta(hours=72)
    gave_up = next_step(POLICY, attempts=3, first_attempt_at=T0, now=late)
    assert isinstance(gave_up, GiveUp) and "3.0 days" in gave_up.reason
    # shortly before the deadline, the last retry is at the deadline, not after it
    almost = late - timedelta(minutes=1)
    last = next_step(POLICY, attempts=3, first_attempt_at=T0, now=almost)
    assert last == Retry(late)


async def _send(
    world: World, server: RecordingServer, retry: RetrySettings, week: str = WEEK
) -> DeliveryReport:
    settings = replace(world.settings, smtp=server.settings(), retry=retry)
    pool = SmtpPool(settings.smtp)
    try:
        report = await jobs.send(settings, world.store, world.newsletter, week, pool, now=NOW)
    finally:
        await pool.close()
    assert report is not None
    return report


async def _send_due(
    world: World, server: RecordingServer, retry: RetrySettings
) -> list[DeliveryReport]:
    settings = replace(world.settings, smtp=server.settings(), retry=retry)
    pool = SmtpPool(settings.smtp)
    try:
        return await jobs.send_due(settings, world.store, pool, now=NOW)
    finally:
        await pool.close()


async def test_a_deferred_row_is_sent_by_the_retry_job_once_it_is_due(world: World) -> None:
    quick = replace(POLICY, first_minutes=0.05)  # 3 s (plus jitter)
    async with RecordingServer(temp_fail={DEFERRED: "451 4.7.1 Greylisted, try later"}) as s:
        first = await _send(world, s, quick)
        assert (first.sent, first.deferred, first.left) == (13, 1, 1)
        assert first.next_retry is not None
        # not due yet: the retry job leaves it alone
        assert await _send_due(world, s, quick) == []
        assert s.handler.rcpt_seen.count(DEFERRED) == 1
        await asyncio.sleep((first.next_retry - datetime.now(UTC)).total_seconds() + 0.05)
        s.handler.replies.clear()  # the greylisting has passed
        [retried] = await _send_due(world, s, quick)
    assert (retried.sent, retried.left, retried.finished) == (1, 0, True)
    assert [r for _, rcpts, _ in s.messages for r in rcpts].count(DEFERRED) == 1
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sent"
    [row] = [r for r in world.store.deliveries(record.id) if r.email == DEFERRED]
    assert (row.state, row.attempts) == (DeliveryState.SENT, 2)


async def test_a_row_deferred_too_often_is_failed_with_its_last_reply(world: World) -> None:
    quick = replace(POLICY, first_minutes=0.001, max_attempts=2)
    async with RecordingServer(temp_fail={DEFERRED: "452 4.2.2 Mailbox full"}) as s:
        first = await _send(world, s, quick)
        assert first.deferred == 1
        await asyncio.sleep(0.2)
        [second] = await _send_due(world, s, quick)
    assert (second.failed, second.gave_up, second.left) == (1, 1, 0)
    assert "given up" in second.failures[0]
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sent"
    [row] = [r for r in world.store.deliveries(record.id) if r.email == DEFERRED]
    assert row.state == DeliveryState.FAILED and row.smtp_code == 452
    assert row.smtp_reply == "4.2.2 Mailbox full (gave up after 2 attempts)"
    # a temporary failure is no hard bounce: the reader stays subscribed
    assert world.store.subscriber_by_email(DEFERRED) is not None
    assert DEFERRED in {s.email for s in world.store.active_subscribers()}


async def test_a_row_older_than_max_age_is_failed_at_its_next_attempt(world: World) -> None:
    async with RecordingServer(temp_fail={DEFERRED: "421 4.4.2 Timeout"}) as s:
        await _send(world, s, POLICY)
        record = world.store.get_issue(world.newsletter.id, WEEK)
        assert record is not None
        # the row was first tried four days ago
        [row] = [r for r in world.store.deliveries(record.id) if r.email == DEFERRED]
        with world.store.engine.begin() as conn:
            conn.execute(
                t.deliveries.update()
                .where(t.deliveries.c.id == row.id)
                .values(
                    first_attempt_at=datetime.now(UTC) - timedelta(days=4),
                    next_attempt_at=None,
                )
            )
        [report] = await _send_due(world, s, POLICY)
    assert (report.failed, report.gave_up) == (1, 1)
    [row] = [r for r in world.store.deliveries(record.id) if r.email == DEFERRED]
    assert row.state == DeliveryState.FAILED and "over 4.0 days" in (row.smtp_reply or "")


async def test_the_retry_job_takes_every_unfinished_issue(world: World) -> None:
    quick = replace(POLICY, first_minutes=0.001)
    everyone = {r.email: "451 4.3.0 Try again later" for r in world.store.active_subscribers()}
    async with RecordingServer(temp_fail=everyone) as s:
        older = await _send(world, s, quick, week="2025-W04")
        assert older.sent == 0 and older.deferred > 0 and older.left == older.deferred
        s.handler.replies.clear()
        newer = await _send(world, s, quick)  # the newest week goes out completely
        assert newer.finished
        assert world.store.unfinished_issues() == [(world.newsletter.id, "2025-W04")]
        await asyncio.sleep(0.2)
        reports = await _send_due(world, s, quick)
    assert [(r.issue_key, r.sent, r.left) for r in reports] == [("2025-W04", older.deferred, 0)]
    assert world.store.unfinished_issues() == []


async def test_status_counts_states_replies_and_the_next_retry(world: World) -> None:
    replies = {
        DEFERRED: "451 4.7.1 Greylisted, try later",
        "anna.schulze@example.com": "550 5.1.1 No such user",
        "franziska.huber@example.org": "554 5.7.1 Message refused by policy",
    }
    async with RecordingServer(temp_fail=replies) as s:
        report = await _send(world, s, POLICY)
    assert (report.sent, report.failed, report.deferred) == (11, 1, 2)
    [found] = issue_statuses(world.settings, world.store, world.newsletter.id)
    d = found.deliveries
    assert (d.sent, d.failed, d.waiting, d.due, d.sending, d.left) == (11, 1, 2, 0, 0, 2)
    assert d.next_retry == report.next_retry and d.rate_per_minute is not None
    text = format_status(found)
    assert text.startswith(f"{world.newsletter.id} {WEEK} (sending): 11 sent, 1 failed")
    assert "next retry: " in text and "ETA" not in text
    lines = text.splitlines()
    codes = [line.split()[0] for line in lines if line.startswith("    ") and " ×" in line]
    assert sorted(codes) == ["451", "550", "554"]
    assert "1× 5.1.1 No such user" in text and "1× 4.7.1 Greylisted, try later" in text
    # one week asked for by name shows the same issue
    [same] = issue_statuses(world.settings, world.store, world.newsletter.id, WEEK)
    assert same.record.id == found.record.id


async def test_deliveries_retry_requeues_deferred_and_failed_but_not_bounced(
    world: World,
) -> None:
    bounced, policy = "anna.schulze@example.com", "franziska.huber@example.org"
    async with RecordingServer(
        temp_fail={DEFERRED: "451 4.7.1 Greylisted"},
        refuse={bounced: "550 5.1.1 No such user", policy: "550 5.2.0 Rejected"},
    ) as s:
        first = await _send(world, s, POLICY)
        assert (first.failed, first.deferred) == (2, 1)
        assert requeue(world.settings, world.store, world.newsletter.id, WEEK) == 1
        s.handler.replies.clear()
        again = await _send(world, s, POLICY)
        assert (again.sent, again.left) == (1, 0)
        record = world.store.get_issue(world.newsletter.id, WEEK)
        assert record is not None and record.status == "sent"
        # --failed: the refused rows come back; the hard bounce is suppressed, so skipped
        assert requeue(world.settings, world.store, world.newsletter.id, WEEK, failed=True) == 2
        record = world.store.get_issue(world.newsletter.id, WEEK)
        assert record is not None and record.status == "sending"
        third = await _send(world, s, POLICY)
    assert (third.sent, third.unsubscribed_since, third.finished) == (1, 1, True)
    assert [r for _, rcpts, _ in s.messages for r in rcpts].count(policy) == 1
    assert bounced not in [r for _, rcpts, _ in s.messages for r in rcpts]
    with pytest.raises(DigestError, match="no issue 2024-W01"):
        requeue(world.settings, world.store, world.newsletter.id, "2024-W01")


async def test_each_class_of_reply_has_its_outcome(world: World) -> None:
    unknown, no_user, policy = (
        "anna.schulze@example.com",
        "franziska.huber@example.org",
        "josef.maier@example.com",
    )
    full, refused = "juergen.boehm@example.org", "katharina.lang@example.org"
    replies = {
        unknown: "550 5.1.1 <anna.schulze@example.com>: Recipient address rejected",
        no_user: "550 No such user here",
        policy: "554 5.7.1 Message rejected by policy",
        full: "452 4.2.2 Mailbox full",
        refused: "552 5.3.4 Message too big",
    }
    async with RecordingServer(temp_fail=replies) as s:
        report = await _send(world, s, POLICY)
    assert (report.sent, report.failed, report.deferred, report.policy) == (9, 3, 2, 1)
    assert "1 of them refused by policy (5.7.x; not suppressed)" in report.summary()
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    rows = {r.email: r for r in world.store.deliveries(record.id)}
    assert {e: rows[e].state for e in replies} == {
        unknown: DeliveryState.FAILED,
        no_user: DeliveryState.FAILED,
        policy: DeliveryState.PENDING,
        full: DeliveryState.PENDING,
        refused: DeliveryState.FAILED,
    }
    assert rows[policy].next_attempt_at is not None and rows[full].next_attempt_at is not None
    # hard bounces (5.1.x, a 550 saying the user is unknown) suppress; nothing else does
    assert world.store.is_suppressed(unknown, world.newsletter.id)
    assert world.store.is_suppressed(no_user, world.newsletter.id)
    for other in (policy, full, refused):
        assert not world.store.is_suppressed(other, world.newsletter.id)


async def test_a_run_stopped_before_its_audience_was_planned_leaves_the_issue_unfinished(
    world: World,
) -> None:
    stop = asyncio.Event()
    stop.set()  # SIGTERM before the first ledger row was written
    async with RecordingServer() as s:
        settings = replace(world.settings, smtp=s.settings(), retry=POLICY)
        pool = SmtpPool(settings.smtp)
        try:
            stopped = await jobs.send(
                settings, world.store, world.newsletter, WEEK, pool, now=NOW, stop=stop
            )
        finally:
            await pool.close()
        assert stopped is not None and stopped.stopped == "interrupted"
        assert (stopped.sent, stopped.left, stopped.finished) == (0, 0, False)
        assert "not every recipient planned yet" in stopped.summary()
        record = world.store.get_issue(world.newsletter.id, WEEK)
        assert record is not None and record.status == "composed"  # not 'sent'
        assert world.store.unfinished_issues() == []  # nothing went out yet
        # a run killed after planning its first chunk: some rows, the issue 'composed'
        first = sorted(world.store.active_subscribers(), key=lambda r: r.id or 0)[:3]
        world.store.plan_rows(
            record.id, [PlannedRow(r.id or 0, r.email, ["allgemein"]) for r in first]
        )
        # the retry job takes it up: it plans the rest and sends
        assert world.store.unfinished_issues() == [(world.newsletter.id, WEEK)]
        [report] = await _send_due(world, s, POLICY)
    assert (report.sent, report.finished) == (14, True)
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sent"
    assert world.store.unfinished_issues() == []
