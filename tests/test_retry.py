"""Deferred deliveries are retried by themselves, with backoff, until they give up.

The policy as a pure function, then the whole path against a real aiosmtpd server that
defers chosen recipients: due rows only, every unfinished issue, attempts and age.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from digest import jobs
from digest.config import RetrySettings
from digest.deliver import DeliveryReport
from digest.models import DeliveryState
from digest.retry import JITTER, GiveUp, Retry, backoff, next_step
from digest.store import schema as t
from digest.transport import SmtpPool
from tests.smtp_server import RecordingServer
from tests.test_send import NOW, WEEK, World
from tests.test_send import world as world  # noqa: F401  (the fixture)

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
    quick = replace(POLICY, first_minutes=0.01)  # 0.6 s (plus jitter)
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
