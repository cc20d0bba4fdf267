"""The whole send path against a real aiosmtpd server: demo content in, bytes out.

Idempotent re-send, resume after an interrupted send, a server that goes away, refused
recipients, and what each segment's subscribers receive.
"""

from __future__ import annotations

import asyncio
import email
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from digest.audience.segments import segment_lists
from digest.config import NewsletterSettings, Settings, StoreSettings
from digest.core.models import DeliveryState, Subscriber
from digest.delivery.report import AudienceCounts, DeliveryReport
from digest.delivery.transport import SmtpPool
from digest.issue.prepare import prepare_issue
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import Store
from tests.smtp_server import RecordingServer

ROOT = Path(__file__).resolve().parents[2]
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)


@dataclass
class World:
    settings: Settings
    store: Store
    newsletter: NewsletterSettings

    async def send(
        self, server: RecordingServer, processes: int = 1, **smtp: object
    ) -> DeliveryReport:
        settings = replace(self.settings, smtp=replace(server.settings(), **smtp))
        pool = SmtpPool(settings.smtp)
        try:
            report = await jobs.send(
                settings, self.store, self.newsletter, WEEK, pool, now=NOW, processes=processes
            )
        finally:
            await pool.close()
        assert report is not None
        return report

    def counts(self) -> dict[str, int]:
        record = self.store.get_issue(self.newsletter.id, WEEK)
        assert record is not None
        return self.store.delivery_counts(record.id)


@pytest.fixture
async def world(demo_settings: Settings, store_url: str) -> AsyncIterator[World]:
    """The demo lists and feeds in a fresh store: SQLite, and PostgreSQL when configured."""
    demo_settings = replace(demo_settings, store=StoreSettings(store_url))
    store = jobs.open_store(demo_settings)
    newsletter = demo_settings.newsletters[0]
    reports = import_demo_lists(demo_settings, store, newsletter)
    assert len(reports) == 3 and not any(r.errors for r in reports)
    [collected] = await jobs.collect(demo_settings, store, newsletter.id, now=NOW)
    assert not collected.failed and collected.new > 30
    yield World(demo_settings, store, newsletter)
    store.close()


def _recipients(server: RecordingServer) -> list[str]:
    return [rcpt for _, rcpts, _ in server.messages for rcpt in rcpts]


def _parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=policy.strict)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _text_of(message: email.message.EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()


async def test_each_subscriber_gets_exactly_one_message(world: World, smtp_server) -> None:
    report = await world.send(smtp_server)
    subscribers = world.store.active_subscribers(segment_lists(world.newsletter))
    assert report.sent == report.recipients == len(subscribers) == 14
    received = _recipients(smtp_server)
    assert sorted(received) == sorted(s.email for s in subscribers)
    assert report.variants < report.sent  # MJML compiled per distinct content only
    assert world.counts() == {DeliveryState.SENT: 14}
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sent" and record.sent_at == NOW
    for _, _, data in smtp_server.messages:
        message = _parse(data)
        assert message.defects == []
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        assert "KW 5/2025" in message["Subject"]


async def test_segments_cut_what_each_subscriber_reads(world: World, smtp_server) -> None:
    await world.send(smtp_server)
    by_rcpt = {rcpts[0]: _parse(data) for _, rcpts, data in smtp_server.messages}
    bayern_only = [
        s
        for s in world.store.active_subscribers(["bayern"])
        if s.lists == {"bayern"} and not s.regions
    ]
    assert bayern_only
    text = _text_of(by_rcpt[bayern_only[0].email])
    headlines = [
        line for line in text.splitlines() if re.match(r"^[A-ZÄÖÜ][\w.-]+( [\w.-]+)?: ", line)
    ]
    assert headlines
    other_laender = set(world.newsletter.regions) - {"Bayern"}
    assert not [h for h in headlines if h.split(":")[0] in other_laender]
    it_only = [
        s
        for s in world.store.active_subscribers(["it-leitungen"])
        if s.lists == {"it-leitungen"} and not s.categories
    ]
    text = _text_of(by_rcpt[it_only[0].email])
    assert "POLITIK" not in text and "SMART CITY" not in text and "IT-SICHERHEIT" in text


async def test_sending_again_sends_nothing_twice(world: World, smtp_server) -> None:
    first = await world.send(smtp_server)
    second = await world.send(smtp_server)
    assert (first.sent, second.sent, second.already_sent) == (14, 0, 14)
    assert len(smtp_server.messages) == 14


@pytest.mark.smtp_server(delay=0.05)
async def test_resume_after_the_send_is_killed_midway(world: World, smtp_server) -> None:
    task = asyncio.create_task(world.send(smtp_server, pool_size=1))
    async with asyncio.timeout(10):
        while len(smtp_server.messages) < 5:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    delivered = len(smtp_server.messages)
    assert 5 <= delivered < 14
    # everything the server accepted is recorded as sent: nothing will go twice
    counts = world.counts()
    assert counts[DeliveryState.SENT] == delivered
    assert counts.get(DeliveryState.SENDING, 0) == 0
    resumed = await world.send(smtp_server)
    assert resumed.sent == 14 - delivered and resumed.already_sent == delivered
    assert Counter(_recipients(smtp_server)).most_common(1)[0][1] == 1
    assert len(smtp_server.messages) == 14


async def test_a_run_cancelled_as_a_worker_takes_its_next_row_stops(
    world: World, smtp_server
) -> None:
    # Cancelled from the progress callback, the run's tasks are cancelled while the one
    # worker waits for a row the queue already holds: the moment in which
    # asyncio.wait_for (Python 3.11) handed the row over and dropped the cancellation.
    settings = replace(world.settings, smtp=replace(smtp_server.settings(), pool_size=1))
    pool = SmtpPool(settings.smtp)

    def progress(done: int, total: int) -> None:
        if done == 3:
            task.cancel()

    task = asyncio.create_task(
        jobs.send(settings, world.store, world.newsletter, WEEK, pool, now=NOW, progress=progress)
    )
    try:
        await asyncio.wait([task], timeout=60)  # a run that never ends fails, not hangs
    finally:
        await pool.close()
    assert task.cancelled()
    delivered = len(smtp_server.messages)
    assert 3 <= delivered < 14  # the message in flight finishes; no new one starts
    counts = world.counts()
    assert counts[DeliveryState.SENT] == delivered
    assert counts.get(DeliveryState.SENDING, 0) == 0


@pytest.mark.smtp_server(disconnect_after=3)
async def test_server_going_away_stops_the_run_and_the_next_run_finishes(
    world: World, smtp_server
) -> None:
    first = await world.send(smtp_server, pool_size=1)
    assert first.stopped and first.sent == 3
    assert world.counts()[DeliveryState.PENDING] == 11
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    [tried] = [r for r in world.store.deliveries(record.id) if r.state == "pending" and r.attempts]
    assert tried.message_id and "lost the connection" in (tried.smtp_reply or "")
    # a dropped connection defers the row with backoff; the others are due at once
    assert tried.next_attempt_at is not None and tried.next_attempt_at > datetime.now(UTC)
    assert first.left == 11 and first.next_retry == tried.next_attempt_at
    assert world.store.requeue_deliveries(record.id) == 1  # `digest deliveries retry`
    second = await world.send(smtp_server, pool_size=1)
    # the retry carries the Message-ID of the attempt whose answer never came
    retried = [_parse(d) for _, rcpts, d in smtp_server.messages if rcpts == [tried.email]]
    assert [m["Message-ID"] for m in retried] == [tried.message_id]
    assert second.sent == 11 and second.stopped is None
    assert sorted(_recipients(smtp_server)) == sorted(set(_recipients(smtp_server)))
    assert len(smtp_server.messages) == 14


@pytest.mark.smtp_server(
    refuse={"anna.schulze@example.com": "550 5.1.1 No such user"},
    temp_fail={"m.oezdemir@example.net": "451 4.3.0 Try again later"},
)
async def test_refusals_are_recorded_with_the_reply(world: World, smtp_server) -> None:
    report = await world.send(smtp_server)
    assert (report.sent, report.failed, report.deferred) == (12, 1, 1)
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    rows = {r.email: r for r in world.store.deliveries(record.id)}
    assert (rows["anna.schulze@example.com"].state, rows["anna.schulze@example.com"].smtp_code) == (
        DeliveryState.FAILED,
        550,
    )
    assert "No such user" in (rows["anna.schulze@example.com"].smtp_reply or "")
    assert rows["m.oezdemir@example.net"].state == DeliveryState.PENDING
    deferred = rows["m.oezdemir@example.net"]
    assert deferred.attempts == 1 and deferred.next_attempt_at is not None
    minutes = (deferred.next_attempt_at - datetime.now(UTC)).total_seconds() / 60
    assert 4 < minutes <= 5 * 1.25  # retry.first_minutes, with jitter
    assert report.left == 1 and report.next_retry == deferred.next_attempt_at
    received = len(smtp_server.messages)
    again = await world.send(smtp_server)
    # the permanent refusal is not retried; the temporary one waits for its time
    assert (again.sent, again.failed, again.deferred, again.waiting) == (0, 0, 0, 1)
    assert again.left == 1 and not again.finished and "next retry due" in again.summary()
    assert (
        len(smtp_server.messages) == received
        and smtp_server.handler.rcpt_seen.count("m.oezdemir@example.net") == 1
    )
    assert record.status != "sent"


async def test_dry_run_writes_nothing(world: World) -> None:
    report = jobs.dry_run(world.settings, world.store, world.newsletter, WEEK, now=NOW)
    assert report is not None and report.would_send == 14 and report.variants >= 2
    assert report.largest_html < 90_000
    assert world.store.get_issue(world.newsletter.id, WEEK) is None


async def test_an_empty_week_sends_nothing(world: World, smtp_server) -> None:
    pool = SmtpPool(smtp_server.settings())
    try:
        result = await jobs.send(
            world.settings, world.store, world.newsletter, "2024-W10", pool, now=NOW
        )
    finally:
        await pool.close()
    assert result is None and smtp_server.messages == []


async def test_an_article_goes_into_one_issue_only(world: World, smtp_server) -> None:
    await world.send(smtp_server)
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    claimed = {a.uid for a in world.store.issue_articles(record.id)}
    after_w06 = datetime(2025, 2, 10, 6, 0, tzinfo=UTC)
    later = prepare_issue(world.store, world.newsletter, "2025-W06", after_w06)
    assert later is not None
    assert not claimed & {a.uid for a in later.issue.articles}


@pytest.mark.smtp_server(disconnect_after=2)
async def test_who_unsubscribed_meanwhile_is_skipped_on_resume(world: World, smtp_server) -> None:
    first = await world.send(smtp_server, pool_size=1)
    assert first.stopped and first.sent == 2
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    pending = world.store.deliveries(record.id, [DeliveryState.PENDING])
    world.store.unsubscribe(pending[-1].subscriber_id, world.newsletter.id)
    world.store.requeue_deliveries(record.id)  # the dropped one is due again at once
    second = await world.send(smtp_server, pool_size=1)
    assert (second.sent, second.unsubscribed_since, second.skipped) == (11, 1, 0)
    assert pending[-1].email not in _recipients(smtp_server)
    assert world.counts() == {DeliveryState.SENT: 13, DeliveryState.SKIPPED: 1}


@pytest.mark.smtp_server(delay=0.05)
async def test_two_runs_at_once_send_each_message_once(world: World, smtp_server) -> None:
    first = asyncio.create_task(world.send(smtp_server, pool_size=1))
    async with asyncio.timeout(10):
        while len(smtp_server.messages) < 2:
            await asyncio.sleep(0.01)
    second = await world.send(smtp_server, pool_size=1)
    await first
    assert Counter(_recipients(smtp_server)).most_common(1)[0][1] == 1
    assert len(smtp_server.messages) == 14
    assert first.result().sent + second.sent == 14
    assert world.counts() == {DeliveryState.SENT: 14}


async def test_a_row_left_sending_by_a_killed_run_waits_out_its_lease(
    world: World, smtp_server
) -> None:
    from sqlalchemy import update

    from digest.store import schema

    record = prepare_issue(world.store, world.newsletter, WEEK, NOW)
    assert record is not None and record.record is not None
    world.store.plan_deliveries(
        record.record.id,
        [
            (s.id, s.email, ("alle",))
            for s in world.store.active_subscribers(["allgemein"])
            if s.id is not None
        ],
    )
    [row, *_] = world.store.deliveries(record.record.id)
    # a run claimed the row and was killed before the server's answer was recorded
    [claimed] = world.store.claim_deliveries(
        record.record.id,
        after_id=0,
        limit=1,
        stale_before=datetime(2025, 1, 1, tzinfo=UTC),
        new_message_id=lambda: "<killed.run@kommune-digital.example>",
    )
    assert claimed.id == row.id
    first = await world.send(smtp_server)
    assert first.in_flight == 1 and row.email not in _recipients(smtp_server)
    # once the claim is older than the lease, the next run sends it, same Message-ID
    with world.store.engine.begin() as conn:
        conn.execute(
            update(schema.deliveries)
            .where(schema.deliveries.c.id == row.id)
            .values(updated_at=datetime(2025, 1, 1, tzinfo=UTC))
        )
    second = await world.send(smtp_server)
    assert second.resumed == 1 and second.sent == 1
    [(_, _, data)] = [m for m in smtp_server.messages if m[1] == [row.email]]
    assert _parse(data)["Message-ID"] == "<killed.run@kommune-digital.example>"
    assert world.counts() == {DeliveryState.SENT: 14}


async def test_a_week_not_over_is_not_sent(world: World, smtp_server) -> None:
    from digest.core.errors import ComposeError

    pool = SmtpPool(smtp_server.settings())
    try:
        with pytest.raises(ComposeError, match="week 2025-W06 is not over until 2025-02-10 00:00"):
            await jobs.send(
                world.settings, world.store, world.newsletter, "2025-W06", pool, now=NOW
            )
    finally:
        await pool.close()
    assert smtp_server.messages == []
    assert world.store.get_issue(world.newsletter.id, "2025-W06") is None


async def test_dry_run_after_a_send_counts_only_who_is_left(world: World, smtp_server) -> None:
    await world.send(smtp_server)
    report = jobs.dry_run(world.settings, world.store, world.newsletter, WEEK, now=NOW)
    assert report is not None and report.would_send == 0 and report.already_sent == 14


@pytest.mark.smtp_server(
    refuse={"anna.schulze@example.com": "550 5.7.1 Recipient address rejected: Access denied"}
)
async def test_one_policy_refusal_stays_pending_and_the_run_goes_on(
    world: World, smtp_server
) -> None:
    report = await world.send(smtp_server)
    assert (report.sent, report.deferred, report.failed, report.stopped) == (13, 1, 0, None)
    assert world.counts() == {DeliveryState.SENT: 13, DeliveryState.PENDING: 1}


async def test_policy_refusals_in_a_row_stop_the_run(world: World) -> None:
    everyone = {s.email: "554 5.7.1 Relay access denied" for s in world.store.active_subscribers()}
    async with RecordingServer(refuse=everyone) as server:
        report = await world.send(server, pool_size=1)
    assert report.stopped is not None and "refused by policy" in report.stopped
    assert (report.sent, report.deferred, report.failed) == (0, 3, 0)
    assert world.counts() == {DeliveryState.PENDING: 14}
    assert report.left == 14 and report.next_retry is not None


def _dry_run(world: World) -> jobs.DryRunReport:
    report = jobs.dry_run(world.settings, world.store, world.newsletter, WEEK, now=NOW)
    assert report is not None
    return report


def _audience(report: AudienceCounts) -> dict[str, int]:
    return {name: getattr(report, name) for name in vars(AudienceCounts())}


async def test_dry_run_after_unsubscribes_and_a_late_reader(world: World, smtp_server) -> None:
    await world.send(smtp_server)
    sent = world.store.active_subscribers(segment_lists(world.newsletter))
    for subscriber in sent[:2]:
        assert subscriber.id is not None
        world.store.unsubscribe(subscriber.id, world.newsletter.id)
    world.store.save_subscriber(Subscriber("neu@example.org", "Neu"), ["allgemein"])
    dry = _dry_run(world)
    assert (dry.would_send, dry.already_sent, dry.subscribed_after) == (0, 14, 1)
    assert "would send 0 messages" in dry.summary()
    assert "1 subscribed after the issue went out" in dry.summary()
    real = await world.send(smtp_server)
    assert (real.sent, real.already_sent, real.subscribed_after) == (0, 14, 1)
    assert "1 subscribed after the issue went out" in real.summary()
    assert len(smtp_server.messages) == 14


@pytest.mark.smtp_server(disconnect_after=3)
async def test_dry_run_and_send_agree(world: World, smtp_server) -> None:
    fresh = _dry_run(world)
    first = await world.send(smtp_server, pool_size=1)
    assert first.stopped and fresh.would_send == 14 == first.sent + first.deferred + 10
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None
    rows = world.store.deliveries(record.id)
    got_it = next(r for r in rows if r.state == DeliveryState.SENT)
    waiting = next(r for r in rows if r.state == DeliveryState.PENDING)
    for row in (got_it, waiting):
        world.store.unsubscribe(row.subscriber_id, world.newsletter.id)
    # joined after the issue went out (its ledger was planned), before it was finished
    world.store.save_subscriber(Subscriber("neu@example.org", "Neu"), ["allgemein"])
    dry = _dry_run(world)
    assert _audience(dry) == {
        "already_sent": 3,
        "refused_before": 0,
        "skipped_before": 0,
        "unsubscribed_since": 1,
        "subscribed_after": 1,
        "skipped": 0,
    }
    assert dry.would_send == 10
    received_before = len(smtp_server.messages)
    real = await world.send(smtp_server, pool_size=1)
    assert real.sent == dry.would_send == len(smtp_server.messages) - received_before
    assert _audience(real) == _audience(dry)
    assert "neu@example.org" not in _recipients(smtp_server)
    assert waiting.email not in _recipients(smtp_server)
    after = _dry_run(world)
    assert (after.would_send, after.already_sent, after.skipped_before) == (0, 13, 1)


UTF8_READERS = ("jürgen@beispiel.de", "zoë@beispiel.de")


def _with_utf8_readers(world: World) -> World:
    """Two readers whose addresses are UTF-8 before the @, and smtp.smtputf8 on."""
    for address in UTF8_READERS:
        world.store.save_subscriber(Subscriber(address, "Leser"), ["allgemein"])
    settings = replace(world.settings, smtp=replace(world.settings.smtp, smtputf8=True))
    return World(settings, world.store, world.newsletter)


async def test_utf8_readers_are_sent_with_smtputf8(world: World) -> None:
    world = _with_utf8_readers(world)
    dry = _dry_run(world)
    assert (dry.would_send, dry.failures) == (16, [])
    async with RecordingServer(smtputf8=True) as server:
        report = await world.send(server, smtputf8=True)
    assert (report.sent, report.failed, report.stopped) == (16, 0, None)
    everyone = world.store.active_subscribers(segment_lists(world.newsletter))
    assert sorted(_recipients(server)) == sorted(s.email for s in everyone)
    assert set(UTF8_READERS) <= set(_recipients(server))
    for (_, [rcpt], data), options in zip(server.messages, server.mail_options, strict=True):
        needs_it = rcpt in UTF8_READERS
        assert ("SMTPUTF8" in options, "BODY=8BITMIME" in options) == (needs_it, needs_it)
        assert data.isascii() != needs_it
        if needs_it:
            parsed = email.message_from_string(
                data.decode(), policy=policy.SMTPUTF8.clone(raise_on_defect=True)
            )
            assert parsed["To"].addresses[0].addr_spec == rcpt
    assert world.counts() == {DeliveryState.SENT: 16}


async def test_a_relay_without_smtputf8_stops_the_run_at_a_utf8_reader(
    world: World, smtp_server: RecordingServer
) -> None:
    world = _with_utf8_readers(world)
    first = await world.send(smtp_server, pool_size=1, smtputf8=True)
    # The ASCII readers (planned first) are sent as ever; the first UTF-8 one stops
    # the run. The relay lacks what our side needs: neither reader is deferred or
    # aged, both stay due for the run after the fix.
    assert (first.sent, first.deferred, first.failed) == (14, 0, 0)
    assert first.stopped is not None
    assert "does not offer the SMTPUTF8 extension" in first.stopped
    assert "jürgen@beispiel.de" in first.stopped and "smtp.smtputf8" in first.stopped
    assert all(options == [f"SIZE={len(d)}"] for (*_, d), options in zip(
        smtp_server.messages, smtp_server.mail_options, strict=True
    ))  # fmt: skip
    record = world.store.get_issue(world.newsletter.id, WEEK)
    assert record is not None and record.status == "sending"
    rows = {r.email: r for r in world.store.deliveries(record.id, [DeliveryState.PENDING])}
    assert set(rows) == set(UTF8_READERS)
    assert all(
        (row.attempts, row.first_attempt_at, row.next_attempt_at) == (0, None, None)
        for row in rows.values()
    )
    # With a relay that offers it, the next run sends the rest.
    async with RecordingServer(smtputf8=True) as server:
        second = await world.send(server, smtputf8=True)
    assert (second.sent, second.stopped) == (2, None)
    assert sorted(_recipients(server)) == sorted(UTF8_READERS)
    assert world.counts() == {DeliveryState.SENT: 16}


async def test_without_smtputf8_a_utf8_reader_cannot_be_built(world: World) -> None:
    _with_utf8_readers(world)  # stored as an import with smtp.smtputf8 on would
    assert not world.settings.smtp.smtputf8
    dry = _dry_run(world)
    assert dry.would_send == 14 and len(dry.failures) == 2
    assert all("set smtp.smtputf8 = true" in failure for failure in dry.failures)


@pytest.mark.smtp_server(
    refuse={
        "anna.schulze@example.com": "550 5.1.1 No such user",
        "m.oezdemir@example.net": "550 5.7.1 Recipient address rejected: Access denied",
    }
)
async def test_a_hard_bounce_is_suppressed_and_a_suppressed_reader_gets_nothing(
    world: World, smtp_server
) -> None:
    world.store.suppress("Juergen.Boehm@example.org", "complaint")
    report = await world.send(smtp_server)
    assert report.recipients == 13
    assert "juergen.boehm@example.org" not in _recipients(smtp_server)
    assert world.store.is_suppressed("anna.schulze@example.com")
    assert not world.store.is_suppressed("m.oezdemir@example.net")  # 5.7.x: our problem
    everyone = {s.email for s in world.store.active_subscribers(newsletter=world.newsletter.id)}
    assert "anna.schulze@example.com" not in everyone and "m.oezdemir@example.net" in everyone
