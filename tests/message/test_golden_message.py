"""The full message of the demo issue for one subscriber, byte for byte.

The golden file tests/message/golden/message.eml holds the exact wire bytes (CRLF line ends) of
issue 2025-W05 for juergen.boehm@example.org, who is in two segments. The clock, the
Message-ID (and with it the MIME boundary) and the subscriber id (and with it the
signed tokens in the links) are fixed, so the bytes are the same on every run. After a
deliberate change, rewrite the file with
``DIGEST_UPDATE_GOLDEN=1 pytest tests/message/test_golden_message.py`` and review the diff.
"""

from __future__ import annotations

import difflib
import email
import email.policy
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from digest.audience.segments import recipients_for, segment_lists
from digest.config import Settings
from digest.core.models import Issue, Message
from digest.issue.compose import format_issue
from digest.issue.prepare import prepare_issue
from digest.message.personalize import Personalizer
from digest.ops import jobs
from digest.ops.demo import import_demo_lists

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "message.eml"
WEEK = "2025-W05"
NOW = datetime(2025, 2, 3, 6, 0, tzinfo=UTC)
READER = "juergen.boehm@example.org"
MESSAGE_ID = "wochenueberblick.2025-W05.golden"
#: Subscriber ids follow the import order, and the tokens in the links sign the id.
IMPORT_ORDER = ("allgemein", "bayern", "it-leitungen")
READER_ID = 1
# Read at import: the demo_settings fixture removes every DIGEST_* variable while it runs.
UPDATE_GOLDEN = os.environ.get("DIGEST_UPDATE_GOLDEN") == "1"


async def demo_message(
    settings: Settings, *, reader_locale: str | None = "de_DE"
) -> tuple[Message, Issue]:
    """The demo world as ``digest demo`` builds it, and the reader's message from it.

    The reader is imported with locale de_DE; ``reader_locale`` replaces it (None: none
    of their own, so the newsletter's applies).
    """
    newsletter = settings.newsletters[0]
    assert set(IMPORT_ORDER) == segment_lists(newsletter)
    store = jobs.open_store(settings)
    try:
        reports = import_demo_lists(settings, store, newsletter)
        assert [r.list_name for r in reports] == list(IMPORT_ORDER)
        assert not any(r.errors for r in reports)
        [collected] = await jobs.collect(settings, store, newsletter.id, now=NOW)
        assert not collected.failed
        prepared = prepare_issue(store, newsletter, WEEK, NOW, save=False)
        subscribers = store.active_subscribers(segment_lists(newsletter))
    finally:
        store.close()
    assert prepared is not None
    [recipient] = [
        r for r in recipients_for(newsletter, subscribers) if r.subscriber.email == READER
    ]
    assert recipient.subscriber.id == READER_ID
    assert recipient.segments == ("alle", "bayern")
    assert recipient.subscriber.locale == "de_DE"
    recipient = replace(recipient, subscriber=replace(recipient.subscriber, locale=reader_locale))
    personalizer = Personalizer(settings, newsletter, prepared.issue, NOW)
    variant = personalizer.variant_for(recipient)
    assert variant is not None
    return personalizer.message_for(recipient, variant, message_id=MESSAGE_ID), prepared.issue


def check_golden(actual: bytes, golden: Path = GOLDEN) -> None:
    if UPDATE_GOLDEN:
        golden.write_bytes(actual)
        return
    assert golden.exists(), f"no golden file {golden}: run with DIGEST_UPDATE_GOLDEN=1"
    expected = golden.read_bytes()
    if actual == expected:
        return
    if actual.replace(b"\r\n", b"\n") == expected.replace(b"\r\n", b"\n"):
        raise AssertionError(f"{golden.name}: only the line ends differ (checked out with LF?)")
    diff = difflib.unified_diff(
        expected.decode("utf-8", "replace").splitlines(),
        actual.decode("utf-8", "replace").splitlines(),
        "golden",
        "actual",
        n=1,
        lineterm="",
    )
    shown = "\n".join(list(diff)[:80])
    raise AssertionError(
        f"{golden.name} differs; if the change is intended, rerun with DIGEST_UPDATE_GOLDEN=1 "
        f"and review the diff:\n{shown}"
    )


async def test_golden_demo_issue_and_parts(demo_settings: Settings) -> None:
    """What a person reads, reviewable as plain files: the composed issue and both parts."""
    message, issue = await demo_message(demo_settings)
    check_golden(format_issue(issue).encode(), GOLDEN.parent / "demo-issue.txt")
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    for subtype, name in (("plain", "demo-message.txt"), ("html", "demo-message.html")):
        part = parsed.get_body(preferencelist=(subtype,))
        assert part is not None
        content = part.get_content().replace("\r\n", "\n")
        if subtype == "html":  # one tag per line, so a change shows as a readable diff
            content = content.replace("><", ">\n<")
        check_golden(content.encode(), GOLDEN.parent / name)


async def test_golden_message(demo_settings: Settings) -> None:
    message, _ = await demo_message(demo_settings)
    check_golden(message.data)
    data = message.data

    head, separator, _ = data.partition(b"\r\n\r\n")
    assert separator and data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends only
    for line in head.split(b"\r\n"):
        assert line.isascii(), line
        # Only an unbreakable <URL> may run past 78 characters (up to 998 are allowed).
        assert len(line) <= 78 or re.fullmatch(rb"(List-Unsubscribe:)? <\S+>,?", line), line
        assert len(line) <= 998

    parsed = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(parsed, EmailMessage)
    for each in parsed.walk():
        assert not each.defects, each.defects
    assert parsed["Message-ID"] == message.message_id == f"<{MESSAGE_ID}@kommune-digital.example>"
    assert parsed["Date"].datetime == NOW
    assert parsed["To"].addresses[0].display_name == "Jürgen Böhm"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"

    subject = parsed["Subject"]
    assert subject == (
        "Kommune Digital – Wochenüberblick KW 5/2025: "
        "München: Stadtrat verdoppelt Budget für Digitalprojekte"
    )
    # The umlauts travel as RFC 2047 encoded words and decode back.
    raw_subject = re.search(rb"\r\nSubject:(.*?)\r\n(?! )", data, re.DOTALL)
    assert raw_subject is not None and b"=?utf-8?q?" in raw_subject[1].lower()
    assert "ü" in subject
