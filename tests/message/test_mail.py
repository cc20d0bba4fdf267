"""The message bytes, as a mail server receives them and a strict reader parses them."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import unquote

import pytest

from digest.audience import tokens
from digest.config import Settings
from digest.core.models import Message
from digest.delivery.transport import SmtpPool
from digest.issue.compose import MAX_SUBJECT_LENGTH
from digest.message.mail import MAX_NAME_LENGTH, MessageError, build_message
from tests.smtp_server import RecordingServer

SUBJECT = (
    "Kommune Digital KW 5/2025: Bayern plant einheitlichen IT-Dienstleister – "
    "Übersicht für Städte & Gemeinden"
)
NOW = datetime(2025, 1, 27, 7, 0, tzinfo=timezone(timedelta(hours=1)))
INJECTION = "\r\nBcc: evil@example.org"


def _build(settings: Settings, **overrides: object) -> Message:
    newsletter = settings.newsletters[0]
    values: dict[str, object] = {
        "newsletter": newsletter,
        "settings": settings,
        "to_addr": "juergen.boehm@example.org",
        "to_name": "Jürgen Böhm",
        "subject": SUBJECT,
        "html": '<html lang="de"><body><p>Grüße aus Köln</p></body></html>\n',
        "text": "Grüße aus Köln\n.\nFrom the start of a line\n",
        "unsubscribe_url": tokens.unsubscribe_url(settings, newsletter.id, 4711),
        "unsubscribe_mailto": tokens.unsubscribe_mailto(settings, newsletter.id, 4711),
        "now": NOW,
        "issue_key": "2025-W05",
    }
    values.update(overrides)
    return build_message(**values)  # type: ignore[arg-type]


async def _send(server: RecordingServer, message: Message) -> bytes:
    async with SmtpPool(server.settings()) as pool:
        result = await pool.send(message)
    assert result.ok, result
    [(mail_from, rcpt_tos, data)] = server.messages
    assert (mail_from, rcpt_tos) == (message.sender, [message.recipient])
    return data


def _parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        assert not part.defects, part.defects
    return parsed


def _header_lines(data: bytes) -> list[bytes]:
    head, separator, _ = data.partition(b"\r\n\r\n")
    assert separator
    return head.split(b"\r\n")


async def test_received_message_meets_the_standards(
    smtp_server: RecordingServer, demo_settings: Settings
) -> None:
    message = _build(demo_settings)
    data = await _send(smtp_server, message)
    assert data == message.data  # the exact bytes: a DKIM signature stays valid

    for line in _header_lines(data):
        assert line.isascii(), line
        assert len(line) <= 998
        # Only a URL that cannot be split may run past 78 characters.
        assert len(line) <= 78 or re.fullmatch(rb"(List-Unsubscribe:)? <\S+>,?", line), line
    assert all(b"\n" not in line for line in data.split(b"\r\n"))

    msg = _parse(data)
    assert msg["Subject"] == SUBJECT
    assert msg["Date"].datetime == NOW
    [to] = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jürgen Böhm", "juergen.boehm@example.org")
    [sender] = msg["From"].addresses
    assert sender.addr_spec == message.sender == "newsletter@kommune-digital.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "redaktion@kommune-digital.example"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Message-ID"] == message.message_id
    assert re.fullmatch(r"<[^@<>]+@kommune-digital\.example>", msg["Message-ID"])
    assert msg["List-Id"] == (
        "Kommune Digital – Wochenüberblick <wochenueberblick.kommune-digital.example>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Digest-Issue"] == "2025-W05"

    https, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert https.startswith("http://127.0.0.1:8000/unsubscribe/")
    secret = demo_settings.secret_key
    assert tokens.read_token(secret, "unsubscribe", https.rsplit("/", 1)[1]) == (
        4711,
        "wochenueberblick",
    )
    address, _, query = mailto.removeprefix("mailto:").partition("?")
    assert address == "newsletter@kommune-digital.example"
    assert query.startswith("subject=unsubscribe%20")
    assert tokens.read_token(secret, "unsubscribe", query.rsplit("%20", 1)[1])[0] == 4711

    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.iter_parts()
    assert [text_part.get_content_type(), html_part.get_content_type()] == [
        "text/plain",
        "text/html",
    ]
    for part in (text_part, html_part):
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    # Hard line breaks are CRLF on the wire (RFC 2045), and decode as such.
    assert text_part.get_content() == "Grüße aus Köln\r\n.\r\nFrom the start of a line\r\n"
    assert "Grüße aus Köln" in html_part.get_content()


async def test_same_inputs_give_the_same_bytes(demo_settings: Settings) -> None:
    first = _build(demo_settings, message_id="2025-W05.4711")
    second = _build(demo_settings, message_id="2025-W05.4711")
    assert first.data == second.data
    assert first.message_id == "<2025-W05.4711@kommune-digital.example>"
    assert _build(demo_settings).message_id != _build(demo_settings).message_id


async def test_no_field_can_start_a_header(
    smtp_server: RecordingServer, demo_settings: Settings
) -> None:
    newsletter = demo_settings.newsletters[0]
    newsletter = replace(newsletter, name=newsletter.name + INJECTION)
    message = _build(
        demo_settings,
        newsletter=newsletter,
        subject=SUBJECT + INJECTION,
        to_name="Jürgen Böhm" + INJECTION,
        issue_key="2025-W05" + INJECTION,
    )
    data = await _send(smtp_server, message)
    assert not any(line.lower().startswith(b"bcc") for line in data.split(b"\r\n"))
    msg = _parse(data)
    assert "Bcc" not in msg
    assert msg["Subject"] == SUBJECT + " Bcc: evil@example.org"
    assert [a.addr_spec for a in msg["To"].addresses] == ["juergen.boehm@example.org"]
    assert set(msg.keys()) == {
        "Date", "From", "To", "Reply-To", "Subject", "Message-ID", "List-Id",
        "List-Unsubscribe", "List-Unsubscribe-Post", "X-Digest-Issue", "MIME-Version",
        "Content-Type",
    }  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        {"to_addr": "juergen@example.org" + INJECTION},
        {"to_addr": "no-at-sign"},
        {"unsubscribe_url": "https://example.org/u/x> <https://evil.example"},
        {"now": datetime(2025, 1, 27, 7, 0)},
        {"message_id": "two words"},
    ],
)
def test_bad_values_are_refused(demo_settings: Settings, overrides: dict[str, object]) -> None:
    with pytest.raises(MessageError):
        _build(demo_settings, **overrides)


async def test_a_50000_character_html_line_arrives_intact(
    smtp_server: RecordingServer, demo_settings: Settings
) -> None:
    cell = '<td style="padding:0">Übersicht für Städte &amp; Gemeinden</td>'
    html = "<table><tr>" + cell * (50_000 // len(cell) + 1) + "</tr></table>"
    assert len(html) > 50_000 and "\n" not in html
    message = _build(demo_settings, html=html, now=datetime(2025, 1, 27, tzinfo=UTC))
    data = await _send(smtp_server, message)
    body = data.partition(b"\r\n\r\n")[2]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 §6.7
    _, html_part = _parse(data).iter_parts()
    assert html_part.get_content() == html + "\r\n"


@pytest.mark.parametrize(
    "name",
    [
        "0" + '"00' * 31,  # found by tests/core/test_fuzz.py
        "Schulze, Anna (Stadtverwaltung Musterstadt) <andere@example.org>, Amt 10 [IT]",
    ],
)
def test_a_long_ascii_name_with_specials_stays_one_name(demo_settings: Settings, name: str) -> None:
    """The email package folds a long quoted string apart; such a name is encoded."""
    message = _build(demo_settings, to_name=name)
    head = message.data.partition(b"\r\n\r\n")[0].decode("ascii")
    [raw] = [
        line.removeprefix("To:").strip()
        for line in re.sub(r"\r\n[ \t]", " ", head).split("\r\n")
        if line.startswith("To:")
    ]
    shown, _, address = str(make_header(decode_header(raw))).rpartition(" ")
    assert (unquote(shown), address) == (name, "<juergen.boehm@example.org>")
    [to] = _parse(message.data)["To"].addresses
    assert to.addr_spec == "juergen.boehm@example.org"
    to_lines = re.search(r"^To:.*?\r\n(?! )", head, re.M | re.S)
    assert to_lines is not None
    assert all(len(line) <= 78 for line in to_lines[0].split("\r\n")), to_lines[0]


def test_huge_subject_and_names_give_bounded_headers(demo_settings: Settings) -> None:
    """A 10 MB subject or name is cut, not folded for minutes (folding is superlinear)."""
    huge = "Förderprogramm für Kommunen " * 370_000  # about 10 MB
    newsletter = replace(demo_settings.newsletters[0], name=huge)
    message = _build(
        demo_settings, newsletter=newsletter, subject=huge, to_name=huge, issue_key=huge
    )
    assert len(message.data) < 10_000
    for line in _header_lines(message.data):
        assert len(line) <= 998, line
    parsed = _parse(message.data)
    subject = str(parsed["Subject"])
    assert len(subject) <= MAX_SUBJECT_LENGTH and subject.endswith("Kommunen…")
    assert subject.startswith("Förderprogramm für Kommunen Förderprogramm")
    # The email package folds a long non-ASCII name into encoded words with spaces
    # inside words ("f ür"); the bound is on the letters.
    [to] = parsed["To"].addresses
    assert len(to.display_name.replace(" ", "")) <= MAX_NAME_LENGTH
    assert to.addr_spec == "juergen.boehm@example.org"
    assert len(str(parsed["List-Id"])) <= MAX_NAME_LENGTH + 80
    for name in ("Subject", "To", "List-Id", "X-Digest-Issue"):
        lines = re.search(rf"^{name}:.*?\r\n(?! )", message.data.decode(), re.M | re.S)
        assert lines is not None
        assert all(len(line) <= 78 for line in lines[0].split("\r\n")), lines[0]


def _smtputf8(settings: Settings) -> Settings:
    return replace(settings, smtp=replace(settings.smtp, smtputf8=True))


@pytest.mark.smtp_server(smtputf8=True)
async def test_utf8_local_part_goes_in_a_utf8_to_header_with_smtputf8(
    smtp_server: RecordingServer, demo_settings: Settings
) -> None:
    settings = _smtputf8(demo_settings)
    message = _build(settings, to_addr="jürgen@bücher.de", message_id="2025-W05.4711")
    # The domain stays in its ASCII form (IDNA), in the envelope and in the header.
    assert message.recipient == "jürgen@xn--bcher-kva.de"
    async with SmtpPool(server_settings := smtp_server.settings(smtputf8=True)) as pool:
        assert server_settings.smtputf8
        result = await pool.send(message)
    assert result.ok, result
    [(mail_from, rcpt_tos, data)] = smtp_server.messages
    assert (mail_from, rcpt_tos, data) == (message.sender, [message.recipient], message.data)
    [options] = smtp_server.mail_options
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(options)

    # Only the To header is UTF-8; the name in it stays RFC 2047 encoded, and every
    # other header and the body are as in the message to an ASCII address.
    ascii_message = _build(settings, message_id="2025-W05.4711")
    lines, ascii_lines = _header_lines(data), _header_lines(ascii_message.data)
    [to] = [line for line in lines if not line.isascii()]
    assert to == "To: =?utf-8?q?J=C3=BCrgen_B=C3=B6hm?= <jürgen@xn--bcher-kva.de>".encode()
    assert [line for line in lines if line != to] == [
        line for line in ascii_lines if not line.startswith(b"To:")
    ]
    assert data.partition(b"\r\n\r\n")[2] == ascii_message.data.partition(b"\r\n\r\n")[2]

    # RFC 6532 is UTF-8 text: a reader decodes it as such and parses it strictly.
    parsed = email.message_from_string(
        data.decode("utf-8"), policy=email.policy.SMTPUTF8.clone(raise_on_defect=True)
    )
    assert isinstance(parsed, EmailMessage) and parsed.defects == []
    [address] = parsed["To"].addresses
    assert (address.display_name, address.addr_spec) == ("Jürgen Böhm", message.recipient)
    for part in parsed.iter_parts():
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    text_part, _ = parsed.iter_parts()
    assert text_part.get_content() == "Grüße aus Köln\r\n.\r\nFrom the start of a line\r\n"

    # An ASCII name goes as is; a local part that is no dot-atom is still refused.
    plain = _build(settings, to_addr="jürgen.böhm@beispiel.de", to_name="Juergen Boehm")
    assert b"\r\nTo: Juergen Boehm <j\xc3\xbcrgen.b\xc3\xb6hm@beispiel.de>\r\n" in plain.data
    for bad in ('"jür gen"@beispiel.de', "jür\x85gen@beispiel.de", "jür..gen@beispiel.de"):
        with pytest.raises(MessageError, match="To: not an email address"):
            _build(settings, to_addr=bad)


def test_utf8_local_part_without_smtputf8_names_the_setting(demo_settings: Settings) -> None:
    assert not demo_settings.smtp.smtputf8
    with pytest.raises(MessageError) as info:
        _build(demo_settings, to_addr="jürgen@beispiel.de")
    assert str(info.value) == (
        "To: 'jürgen@beispiel.de': non-ASCII local part needs an SMTPUTF8 relay; "
        "set smtp.smtputf8 = true if yours supports it"
    )
