"""Bounces and complaints after the SMTP transaction, end to end.

An issue goes out through a real aiosmtpd server with a VERP return path per recipient;
the reports in ``tests/mailboxes/bounces/`` (bounces and delay warnings shaped as Postfix, Gmail,
Microsoft, Exim, qmail and IONOS send them, ARF complaint reports as Yahoo and Microsoft
send them) are filled with what that server received and put into a real Maildir,
which :func:`process_bounces` reads against the real store.
"""

from __future__ import annotations

import email
import mailbox
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from digest.config import BounceSettings, ConfigError, Settings, StoreSettings, parse_settings
from digest.delivery.transport import SmtpPool
from digest.mailboxes.bounces import (
    BounceOutcome,
    BounceReport,
    ForgedReturnPath,
    delivery_in_return_path,
    open_bounce_mailbox,
    process_bounces,
    read_report,
    return_path,
    verp_address,
)
from digest.mailboxes.mailbox import MaildirMailbox
from digest.ops import jobs
from digest.ops.demo import import_demo_lists
from digest.store import DeliveryRow, Store
from digest.store import schema as t
from tests.smtp_server import RecordingServer

FIXTURES = Path(__file__).parent / "bounces"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=5)
DOMAIN = "bounces.kommune-digital.example"


@dataclass
class Sent:
    """An issue sent through a real SMTP server: what it received, per recipient."""

    settings: Settings
    store: Store
    maildir: Path
    received: dict[str, tuple[str, bytes]]  # recipient -> (MAIL FROM, message bytes)
    rows: dict[str, DeliveryRow]  # recipient -> ledger row

    def fill(self, fixture: str, recipient: str, **override: str) -> bytes:
        """The report ``fixture`` about the message ``recipient`` received."""
        mail_from, data = self.received[recipient]
        original = data.replace(b"\r\n", b"\n").decode("ascii")
        headers = original.partition("\n\n")[0]
        parsed = email.message_from_string(original, policy=policy.compat32)
        values = {
            "RETURN_PATH": mail_from,
            "RECIPIENT": recipient,
            "MESSAGE_ID": str(parsed["Message-ID"]),
            "SUBJECT": " ".join(str(parsed["Subject"]).split()),
            "ORIGINAL": original,
            "ORIGINAL_HEADERS": headers,
            "ORIGINAL_REDACTED": original.replace(recipient, "redacted"),
        } | override
        text = (FIXTURES / fixture).read_text(encoding="utf-8")
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", value)
        assert "{{" not in text
        return text.encode("utf-8")

    def deliver(self, data: bytes) -> str:
        box = mailbox.Maildir(self.maildir, create=False)
        try:
            return box.add(data)
        finally:
            box.close()

    def process(self, **kwargs: Any) -> BounceReport:
        with MaildirMailbox(self.maildir, "move", "bounce mailbox") as box:
            return process_bounces(self.settings, self.store, box, now=LATER, **kwargs)

    def row(self, recipient: str) -> Any:
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(t.deliveries).where(t.deliveries.c.id == self.rows[recipient].id)
            ).one()

    def status(self, recipient: str) -> str:
        document = self.store.personal_data(recipient)
        assert document is not None
        return str(document["subscriber"]["status"])

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a run could change: the tables it writes and the Maildir."""
        with self.store.engine.connect() as conn:
            tables = tuple(
                sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                for table in (t.deliveries, t.suppressions, t.subscribers)
            )
        files = tuple(
            sorted((p.parent.name, p.name, p.read_bytes()) for p in self.maildir.rglob("*/*"))
        )
        return tables, files


async def send_issue(settings: Settings, server: RecordingServer) -> Sent:
    store = jobs.open_store(settings)
    newsletter = settings.newsletters[0]
    assert not any(r.errors for r in import_demo_lists(settings, store, newsletter))
    await jobs.collect(settings, store, newsletter.id, now=NOW)
    pool = SmtpPool(settings.smtp)
    try:
        report = await jobs.send(settings, store, newsletter, WEEK, pool, now=NOW)
    finally:
        await pool.close()
    assert report is not None and report.sent == len(server.messages) > 10
    record = store.get_issue(newsletter.id, WEEK)
    assert record is not None
    rows = {row.email: row for row in store.deliveries(record.id)}
    received = {rcpts[0]: (mail_from, data) for mail_from, rcpts, data in server.messages}
    maildir = Path(settings.bounces.maildir)
    mailbox.Maildir(maildir, create=True).close()
    return Sent(settings, store, maildir, received, rows)


@pytest.fixture
async def sent(
    demo_settings: Settings, store_url: str, smtp_server: RecordingServer, tmp_path: Path
) -> AsyncIterator[Sent]:
    settings = replace(
        demo_settings,
        store=StoreSettings(store_url),
        smtp=smtp_server.settings(),
        bounces=BounceSettings(domain=DOMAIN, maildir=str(tmp_path / "bounces")),
    )
    world = await send_issue(settings, smtp_server)
    yield world
    world.store.close()


# --- the return path ----------------------------------------------------------------------


async def test_each_recipient_is_sent_from_its_own_signed_return_path(sent: Sent) -> None:
    settings = sent.settings
    senders = set()
    for recipient, (mail_from, _) in sent.received.items():
        delivery = sent.rows[recipient].id
        assert mail_from == verp_address(settings.bounces, settings.secret_key, delivery)
        assert re.fullmatch(rf"bounce-{delivery}-[a-z2-7]{{16}}@{re.escape(DOMAIN)}", mail_from)
        assert len(mail_from.partition("@")[0]) <= 64
        # A server that changes the case of the address does not lose the delivery.
        found = delivery_in_return_path(settings.bounces, settings.secret_key, mail_from.upper())
        assert found == delivery
        senders.add(mail_from)
    assert len(senders) == len(sent.received)
    # Another key (or a guessed signature) names no delivery.
    with pytest.raises(ForgedReturnPath):
        delivery_in_return_path(settings.bounces, "another-key", next(iter(senders)))


async def test_without_a_bounce_domain_the_envelope_sender_stays(
    demo_settings: Settings, store_url: str, smtp_server: RecordingServer, tmp_path: Path
) -> None:
    settings = replace(
        demo_settings,
        store=StoreSettings(store_url),
        smtp=smtp_server.settings(),
        bounces=BounceSettings(maildir=str(tmp_path / "bounces")),
    )
    world = await send_issue(settings, smtp_server)
    try:
        newsletter = settings.newsletters[0]
        sender = parseaddr(newsletter.sender)[1]
        assert {mail_from for mail_from, _ in world.received.values()} == {sender}
        assert return_path(settings, newsletter, 1) == sender
    finally:
        world.store.close()


# --- reading the mailbox ------------------------------------------------------------------


async def test_real_reports_are_recorded_and_suppress_as_they_should(sent: Sent) -> None:
    people = sorted(sent.received)
    hard = {
        "postfix-hard-5.1.1.eml": (people[0], "5.1.1"),
        "gmail-hard-5.1.1.eml": (people[1], "5.1.1"),
        "microsoft-hard-5.1.10.eml": (people[2], "5.1.10"),
        "exim-text-permanent.eml": (people[3], "5.1.1"),
        "qmail-permanent.eml": (people[4], "5.1.1"),
    }
    recorded_only = {
        "postfix-policy-5.7.26.eml": (people[5], "5.7.26", "policy", BounceOutcome.POLICY),
        "postfix-delayed-4.4.1.eml": (people[6], "4.4.1", "delayed", BounceOutcome.DELAYED),
        "postfix-expired-4.2.2.eml": (people[7], "4.2.2", "soft", BounceOutcome.SOFT),
        "ionos-delay-warning.eml": (people[13], "4.3.0", "delayed", BounceOutcome.DELAYED),
    }
    complaints = {"yahoo-arf-abuse.eml": people[8]}
    keys = {}
    for fixture, (person, _) in hard.items():
        keys[fixture] = sent.deliver(sent.fill(fixture, person))
    for fixture, (person, *_) in recorded_only.items():
        keys[fixture] = sent.deliver(sent.fill(fixture, person))
    for fixture, person in complaints.items():
        keys[fixture] = sent.deliver(sent.fill(fixture, person))
    # Left alone: an auto-reply, a bounce with a tampered signature, one of nothing sent.
    out_of_office = sent.deliver(sent.fill("out-of-office.eml", people[10]))
    real = sent.received[people[11]][0]
    local, _, domain = real.partition("@")
    tampered = f"{local[:-4]}{'aaaa' if local[-4:] != 'aaaa' else 'bbbb'}@{domain}"
    forged = sent.deliver(sent.fill("postfix-hard-5.1.1.eml", people[11], RETURN_PATH=tampered))
    unknown = sent.deliver(
        sent.fill(
            "postfix-hard-5.1.1.eml",
            people[12],
            RETURN_PATH="news@kommune-digital.example",
            ORIGINAL_HEADERS="Message-ID: <not-ours@example.net>\nFrom: x@example.net",
        )
    )
    # Microsoft redacts the recipient and this report carries no return path of ours:
    # nothing in it but the Message-ID says whose complaint it is.
    redacted = sent.deliver(sent.fill("microsoft-jmrp-abuse.eml", people[9]))
    left = {out_of_office, forged, unknown, redacted}
    new_before = {p.name: p.read_bytes() for p in (sent.maildir / "new").iterdir()}

    report = sent.process()

    outcomes = {r.key: r for r in report.results}
    for fixture, (person, status) in hard.items():
        result = outcomes[keys[fixture]]
        assert (result.outcome, result.status, result.suppressed) == (
            BounceOutcome.HARD,
            status,
            "hard_bounce",
        ), fixture
        assert result.delivery_id == sent.rows[person].id
        row = sent.row(person)
        assert (row.bounce, row.bounce_status, row.bounced_at) == ("hard", status, LATER)
        assert row.state == "sent" and row.bounce_diagnostic
        assert sent.store.is_suppressed(person)
        assert sent.status(person) == "bounced"
    for fixture, (person, status, kind, outcome) in recorded_only.items():
        result = outcomes[keys[fixture]]
        assert (result.outcome, result.status, result.suppressed) == (outcome, status, None)
        row = sent.row(person)
        assert (row.bounce, row.bounce_status) == (kind, status), fixture
        assert not sent.store.is_suppressed(person)
    for fixture, person in complaints.items():
        result = outcomes[keys[fixture]]
        assert (result.outcome, result.suppressed) == (BounceOutcome.COMPLAINT, "complaint")
        assert result.delivery_id == sent.rows[person].id, fixture
        assert sent.row(person).bounce == "complaint"
        assert sent.status(person) == "complained"
    assert outcomes[out_of_office].outcome == BounceOutcome.NOT_A_REPORT
    assert outcomes[forged].outcome == BounceOutcome.FORGED
    assert outcomes[unknown].outcome == BounceOutcome.UNKNOWN_DELIVERY
    assert outcomes[redacted].outcome == BounceOutcome.RECIPIENT_MISMATCH
    for person in people[9:13]:
        assert sent.row(person).bounce is None and not sent.store.is_suppressed(person)
    diagnostic = sent.row(people[0]).bounce_diagnostic
    assert diagnostic == "550 5.1.1 Requested action not taken: mailbox unavailable"
    assert report.summary() == (
        "14 unread messages: 10 processed (5 hard, 1 soft, 1 policy, 2 delayed, "
        "1 complaint), 6 addresses suppressed, 4 left alone"
    )
    # The others stay byte for byte in new/ (unread); the processed are in cur/, seen.
    assert {p.name: p.read_bytes() for p in (sent.maildir / "new").iterdir()} == {
        k: v for k, v in new_before.items() if k in left
    }
    assert sorted(p.name for p in (sent.maildir / "cur").iterdir()) == sorted(
        f"{key}:2,S" for key in keys.values()
    )

    # A second run sees only what was left alone and changes nothing.
    before = sent.snapshot()
    again = sent.process()
    assert {r.key for r in again.results} == left and not again.processed
    assert sent.snapshot() == before


async def test_a_report_read_again_changes_nothing(sent: Sent) -> None:
    """Should marking fail after recording, the next run records the same again."""
    person = sorted(sent.received)[0]
    data = sent.fill("postfix-hard-5.1.1.eml", person)
    sent.deliver(data)
    first = sent.process()
    assert [r.suppressed for r in first.results] == ["hard_bounce"]
    before = sent.snapshot()[0]
    sent.deliver(data)
    second = sent.process()
    assert [(r.outcome, r.suppressed) for r in second.results] == [(BounceOutcome.HARD, None)]
    assert sent.snapshot()[0] == before


async def test_dry_run_changes_neither_store_nor_mailbox(sent: Sent) -> None:
    people = sorted(sent.received)
    hard = sent.deliver(sent.fill("gmail-hard-5.1.1.eml", people[0]))
    complaint = sent.deliver(sent.fill("yahoo-arf-abuse.eml", people[1]))
    other = sent.deliver(sent.fill("out-of-office.eml", people[2]))
    before = sent.snapshot()
    report = sent.process(dry_run=True)
    assert {r.key: (r.outcome, r.suppressed) for r in report.results} == {
        hard: (BounceOutcome.HARD, "hard_bounce"),
        complaint: (BounceOutcome.COMPLAINT, "complaint"),
        other: (BounceOutcome.NOT_A_REPORT, None),
    }
    assert report.summary().startswith("3 unread messages: 2 would be processed")
    assert "2 addresses would be suppressed" in report.summary()
    assert sent.snapshot() == before


async def test_soft_bounces_suppress_past_the_limit_within_the_window(sent: Sent) -> None:
    settings = replace(sent.settings, bounces=replace(sent.settings.bounces, soft_limit=2))
    sent.settings = settings
    person = sorted(sent.received)[0]
    row = sent.rows[person]
    # Two more issues reached the same reader: their ledger rows, as a send plans them.
    store = sent.store
    later_rows = []
    for week in ("2025-W06", "2025-W07"):
        issue = store.create_issue("wochenueberblick", week, NOW, NOW, "KW", [])
        store.plan_deliveries(issue.id, [(row.subscriber_id, person, row.segments)])
        later_rows.append(store.deliveries(issue.id)[0])

    def soft_bounce(delivery_id: int) -> bytes:
        path = verp_address(settings.bounces, settings.secret_key, delivery_id)
        return sent.fill("postfix-expired-4.2.2.eml", person, RETURN_PATH=path)

    # One soft bounce long ago, outside the window of soft_days: it does not count.
    sent.deliver(soft_bounce(row.id))
    with MaildirMailbox(sent.maildir) as box:
        old = process_bounces(settings, store, box, now=LATER - timedelta(days=31))
    assert [(r.outcome, r.suppressed) for r in old.results] == [(BounceOutcome.SOFT, None)]
    # The same delivery bouncing again counts once.
    sent.deliver(soft_bounce(later_rows[0].id))
    sent.deliver(soft_bounce(later_rows[0].id))
    report = sent.process()
    assert [r.suppressed for r in report.results] == [None, None]
    assert not store.is_suppressed(person)
    sent.deliver(soft_bounce(later_rows[1].id))
    report = sent.process()
    assert [(r.outcome, r.suppressed) for r in report.results] == [
        (BounceOutcome.SOFT, "soft_bounce")
    ]
    assert store.is_suppressed(person)
    assert store.suppressions_of(person)[0]["reason"] == "soft_bounce"


# --- reports without a signed return path --------------------------------------------------

SENDER = "newsletter@kommune-digital.example"
POSTMASTER = f"postmaster@{DOMAIN}"


def neighbours(sent: Sent) -> tuple[str, str]:
    """Two readers whose ledger rows follow each other: the second knows the first's copy."""
    by_row = sorted(sent.rows, key=lambda person: sent.rows[person].id)
    return by_row[0], by_row[1]


def with_message_id(text: str, message_id: str) -> str:
    """``text`` (a message or its headers) with its Message-ID header replaced."""
    changed, count = re.subn(
        r"^Message-ID:.*$", f"Message-ID: {message_id}", text, flags=re.IGNORECASE | re.M
    )
    assert count == 1
    return changed


def without_lines(data: bytes, *names: str) -> bytes:
    pattern = rb"^(?:" + b"|".join(re.escape(n.encode()) for n in names) + rb"):.*\n"
    changed, count = re.subn(pattern, b"", data, flags=re.IGNORECASE | re.M)
    assert count
    return changed


async def test_message_ids_of_one_send_share_no_part_a_reader_could_derive(sent: Sent) -> None:
    shape = re.compile(
        r"<wochenueberblick\.2025-W05\.(?P<row>[0-9]+)\.(?P<random>[0-9a-f]+)"
        r"@kommune-digital\.example>"
    )
    randoms = []
    for person, row in sent.rows.items():
        match = shape.fullmatch(row.message_id or "")
        assert match, row.message_id
        assert int(match["row"]) == row.id
        assert len(match["random"]) * 4 >= 120  # 32 hex digits: 122 or 128 random bits
        randoms.append(match["random"])
        received = email.message_from_bytes(sent.received[person][1], policy=policy.strict)
        assert received["Message-ID"] == row.message_id
    # Not one part shared between two readers, neighbours included.
    assert len(set(randoms)) == len(randoms) == len(sent.rows) > 10
    first, second = neighbours(sent)
    assert (
        shape.fullmatch(sent.rows[first].message_id or "")["random"]
        != (  # type: ignore[index]
            shape.fullmatch(sent.rows[second].message_id or "")["random"]  # type: ignore[index]
        )
    )


async def test_a_dsn_to_postmaster_about_a_neighbours_message_suppresses_nobody(
    sent: Sent,
) -> None:
    """Even with the neighbour's real Message-ID, a bounce naming another recipient or
    none, and no signed return path, is left unread."""
    victim, reader = neighbours(sent)
    victim_id = str(sent.rows[victim].message_id)
    victim_copy = sent.received[victim][1].replace(b"\r\n", b"\n").decode("ascii")
    own_headers = sent.received[reader][1].replace(b"\r\n", b"\n").decode("ascii")
    own_headers = own_headers.partition("\n\n")[0]
    forged = [
        # The victim's message returned, the reader's address as the recipient.
        sent.fill(
            "postfix-hard-5.1.1.eml",
            victim,
            RETURN_PATH=POSTMASTER,
            RECIPIENT=reader,
        ),
        # No recipient field at all.
        without_lines(
            sent.fill("gmail-hard-5.1.1.eml", victim, RETURN_PATH=POSTMASTER),
            "Final-Recipient",
            "Original-Recipient",
        ),
        # The victim named as recipient, but the returned message is the reader's own
        # copy with the victim's Message-ID put in.
        sent.fill(
            "postfix-delayed-4.4.1.eml",
            victim,
            RETURN_PATH=POSTMASTER,
            ORIGINAL_HEADERS=with_message_id(own_headers, victim_id),
        ),
        # A bounce that is no DSN (read by flufl.bounce), naming the reader.
        sent.fill(
            "exim-text-permanent.eml",
            victim,
            RETURN_PATH=POSTMASTER,
            RECIPIENT=reader,
            ORIGINAL=victim_copy,
        ),
    ]
    for data in forged:
        assert victim_id.encode() in data
        sent.deliver(data)
    before = sent.snapshot()

    report = sent.process()

    assert not sent.store.is_suppressed(victim) and sent.status(victim) == "active"
    assert sent.snapshot() == before  # nothing recorded, every message still unread
    assert not report.processed and "0 addresses suppressed, 4 left alone" in report.summary()
    assert [r.outcome for r in report.results] == [BounceOutcome.RECIPIENT_MISMATCH] * 4


async def test_a_complaint_about_a_neighbours_message_suppresses_nobody(sent: Sent) -> None:
    victim, reader = neighbours(sent)
    victim_id = str(sent.rows[victim].message_id)
    own_copy = sent.received[reader][1].replace(b"\r\n", b"\n").decode("ascii")
    forged = [
        # The victim's message, the reader's address as Original-Rcpt-To.
        sent.fill("yahoo-arf-abuse.eml", victim, RETURN_PATH=SENDER, RECIPIENT=reader),
        # No Original-Rcpt-To; the reader's own copy with the victim's Message-ID.
        without_lines(
            sent.fill(
                "yahoo-arf-abuse.eml",
                victim,
                RETURN_PATH=SENDER,
                ORIGINAL=with_message_id(own_copy, victim_id),
            ),
            "Original-Rcpt-To",
        ),
        # Every address redacted: nothing but the Message-ID names the victim.
        sent.fill("microsoft-jmrp-abuse.eml", victim),
    ]
    for data in forged:
        assert victim_id.encode() in data
        sent.deliver(data)
    before = sent.snapshot()

    report = sent.process()

    assert not sent.store.is_suppressed(victim) and sent.status(victim) == "active"
    assert sent.row(victim).bounce is None
    assert sent.snapshot() == before
    assert [r.outcome for r in report.results] == [BounceOutcome.RECIPIENT_MISMATCH] * 3


async def test_without_a_return_path_a_report_acts_when_message_id_and_recipient_agree(
    sent: Sent,
) -> None:
    sent.settings = replace(sent.settings, bounces=replace(sent.settings.bounces, domain=""))
    people = sorted(sent.received)
    expected = {
        "postfix-hard-5.1.1.eml": BounceOutcome.HARD,
        "gmail-hard-5.1.1.eml": BounceOutcome.HARD,
        "microsoft-hard-5.1.10.eml": BounceOutcome.HARD,
        "exim-text-permanent.eml": BounceOutcome.HARD,
        "qmail-permanent.eml": BounceOutcome.HARD,
        "postfix-policy-5.7.26.eml": BounceOutcome.POLICY,
        "postfix-delayed-4.4.1.eml": BounceOutcome.DELAYED,
        "postfix-expired-4.2.2.eml": BounceOutcome.SOFT,
        "ionos-delay-warning.eml": BounceOutcome.DELAYED,
        "yahoo-arf-abuse.eml": BounceOutcome.COMPLAINT,
    }
    keys = {}
    for (fixture, _), person in zip(expected.items(), people, strict=False):
        data = sent.fill(fixture, person, RETURN_PATH=SENDER)
        if fixture == "postfix-hard-5.1.1.eml":  # the relay's spelling of the address
            data = data.replace(f"rfc822;{person}".encode(), f"rfc822;{person.upper()}".encode())
        keys[sent.deliver(data)] = (fixture, person)

    report = sent.process()

    for result in report.results:
        fixture, person = keys[result.key]
        assert (result.outcome, result.delivery_id) == (
            expected[fixture],
            sent.rows[person].id,
        ), fixture
    assert len(report.processed) == len(expected)
    assert sent.store.is_suppressed(people[0]) and sent.status(people[9]) == "complained"


@pytest.mark.parametrize(
    "old_id",
    [
        # Made by the claiming statement with one random part per claim of 500 rows.
        "<wochenueberblick.2025-W05.{row}.9f3c21ab@kommune-digital.example>",
        # Made by email.utils.make_msgid, one call per row.
        "<173856240012.48213.1180442931250862012.wochenueberblick.2025-W05"
        "@kommune-digital.example>",
    ],
)
async def test_a_report_about_an_older_message_id_still_finds_its_delivery(
    sent: Sent, old_id: str
) -> None:
    sent.settings = replace(sent.settings, bounces=replace(sent.settings.bounces, domain=""))
    victim, reader = neighbours(sent)
    message_id = old_id.format(row=sent.rows[victim].id)
    with sent.store.engine.begin() as conn:
        conn.execute(
            t.deliveries.update()
            .where(t.deliveries.c.id == sent.rows[victim].id)
            .values(message_id=message_id)
        )
    victim_headers = sent.received[victim][1].replace(b"\r\n", b"\n").decode("ascii")
    returned = with_message_id(victim_headers.partition("\n\n")[0], message_id)
    genuine = sent.fill(
        "postfix-hard-5.1.1.eml", victim, RETURN_PATH=SENDER, ORIGINAL_HEADERS=returned
    )
    forged = sent.fill(
        "postfix-hard-5.1.1.eml",
        victim,
        RETURN_PATH=SENDER,
        RECIPIENT=reader,
        ORIGINAL_HEADERS=returned,
    )
    forged_key = sent.deliver(forged)
    genuine_key = sent.deliver(genuine)

    report = sent.process()

    outcomes = {r.key: (r.outcome, r.delivery_id) for r in report.results}
    assert outcomes[genuine_key] == (BounceOutcome.HARD, sent.rows[victim].id)
    assert sent.store.is_suppressed(victim) and not sent.store.is_suppressed(reader)
    assert outcomes[forged_key] == (BounceOutcome.RECIPIENT_MISMATCH, None)


async def test_erasure_removes_the_bounce_diagnostic(sent: Sent) -> None:
    person = sorted(sent.received)[0]
    sent.deliver(sent.fill("postfix-hard-5.1.1.eml", person))
    sent.process()
    [delivery] = sent.store.personal_data(person)["deliveries"]  # type: ignore[index]
    assert (delivery["bounce"], delivery["bounce_status"]) == ("hard", "5.1.1")
    assert "5.1.1" in delivery["bounce_diagnostic"] and delivery["bounced_at"]
    sent.store.erase(person)
    row = sent.row(person)
    assert row.bounce == "hard" and row.bounce_diagnostic is None


def test_reports_are_read_without_a_store() -> None:
    """Each fixture on its own: what kind of report, which status."""
    filler = {
        "RETURN_PATH": "bounce-1-aaaaaaaaaaaaaaaa@" + DOMAIN,
        "RECIPIENT": "anna@example.org",
        "MESSAGE_ID": "<1@kommune-digital.example>",
        "SUBJECT": "Wochenüberblick",
        "ORIGINAL": "Message-ID: <1@kommune-digital.example>\nFrom: a@b.example\n\nText\n",
        "ORIGINAL_HEADERS": "Message-ID: <1@kommune-digital.example>\nFrom: a@b.example",
        "ORIGINAL_REDACTED": "Message-ID: <1@kommune-digital.example>\nFrom: a@b.example\n\nT\n",
    }
    expected = {
        "postfix-hard-5.1.1.eml": ("hard", "5.1.1"),
        "postfix-delayed-4.4.1.eml": ("delayed", "4.4.1"),
        "postfix-expired-4.2.2.eml": ("soft", "4.2.2"),
        "postfix-policy-5.7.26.eml": ("policy", "5.7.26"),
        "gmail-hard-5.1.1.eml": ("hard", "5.1.1"),
        "microsoft-hard-5.1.10.eml": ("hard", "5.1.10"),
        "exim-text-permanent.eml": ("hard", "5.1.1"),
        "qmail-permanent.eml": ("hard", "5.1.1"),
        "ionos-delay-warning.eml": ("delayed", "4.3.0"),
        "yahoo-arf-abuse.eml": ("complaint", None),
        "microsoft-jmrp-abuse.eml": ("complaint", None),
    }
    fixtures = sorted(p.name for p in FIXTURES.glob("*.eml"))
    assert fixtures == sorted([*expected, "out-of-office.eml"])
    for fixture, (kind, status) in expected.items():
        text = (FIXTURES / fixture).read_text(encoding="utf-8")
        for name, value in filler.items():
            text = text.replace("{{" + name + "}}", value)
        found = read_report(email.message_from_string(text, policy=policy.compat32))
        assert found is not None and (found.kind, found.status) == (kind, status), fixture
        assert found.message_ids == ("<1@kommune-digital.example>",), fixture
    office = (FIXTURES / "out-of-office.eml").read_text(encoding="utf-8")
    assert read_report(email.message_from_string(office, policy=policy.compat32)) is None


# --- settings -----------------------------------------------------------------------------


def _settings_with(table: str, demo_settings: Settings) -> Settings:
    import tomllib

    from tests.conftest import ROOT

    data = tomllib.loads((ROOT / "config.toml").read_text(encoding="utf-8") + table)
    return parse_settings(data, environ={})


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('domain = "Bounces.Example.org"', "bounces.domain: 'Bounces.Example.org' is not"),
        ('domain = "localhost"', "bounces.domain: 'localhost' is not a domain"),
        ('prefix = "bounce-x"', "bounces.prefix: 'bounce-x' must be"),
        ("soft_limit = 0", "bounces.soft_limit"),
        ('maildir = "m"\nimap_host = "h"', "bounces: set either maildir"),
        ('imap_host = "imap.example.org"', "bounces.imap_username: is required"),
    ],
)
def test_bad_bounce_settings_name_the_key(
    table: str, problem: str, demo_settings: Settings
) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        _settings_with(f"\n[bounces]\n{table}\n", demo_settings)


def test_bounce_settings_are_read(demo_settings: Settings) -> None:
    settings = _settings_with(
        f'\n[bounces]\ndomain = "{DOMAIN}"\nprefix = "nl.rueck"\nmaildir = "bounces"\n',
        demo_settings,
    )
    assert settings.bounces.verp and settings.bounces.configured
    assert verp_address(settings.bounces, "k", 7).startswith("nl.rueck-7-")
    assert not demo_settings.bounces.verp and not demo_settings.bounces.configured
    with pytest.raises(ConfigError, match=r"bounces: not configured: .*Bounces and complaints"):
        open_bounce_mailbox(demo_settings)


async def test_the_scheduled_job_processes_the_bounce_maildir(
    demo_settings: Settings, tmp_path: Path, smtp_server: RecordingServer
) -> None:
    from tests.conftest import ROOT

    config = tmp_path / "config.toml"
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    config.write_text(
        f'{text}\n[bounces]\ndomain = "{DOMAIN}"\nmaildir = "bounces"\n', encoding="utf-8"
    )
    settings = replace(
        demo_settings,
        smtp=smtp_server.settings(),
        bounces=BounceSettings(domain=DOMAIN, maildir=str(tmp_path / "bounces")),
    )
    world = await send_issue(settings, smtp_server)  # the config's store, in tmp_path
    try:
        person = sorted(world.received)[0]
        world.deliver(world.fill("qmail-permanent.eml", person))
        await jobs.process_bounce_mailbox(str(config))
        assert world.store.is_suppressed(person)
        assert not list((world.maildir / "new").iterdir())
    finally:
        world.store.close()
