"""Transports against a real aiosmtpd server on a free local port, and the link tokens."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from digest.audience import tokens
from digest.audience.tokens import TokenError
from digest.config import Settings
from digest.core.errors import (
    RelayConfigError,
    SenderRefused,
    SendError,
    SendTimeout,
    TransportUnavailable,
)
from digest.core.models import Message
from digest.delivery.capture import CaptureServer
from digest.delivery.transport import DryRunTransport, SmtpPool, _content
from tests.smtp_server import RecordingServer

SENDER = "newsletter@kommune-digital.example"


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Whether the server offers PIPELINING (RFC 2920): every SMTP test runs both ways."""
    return bool(request.param)


@pytest.fixture
async def smtp_server(
    request: pytest.FixtureRequest, pipelining: bool
) -> AsyncIterator[RecordingServer]:
    """The ``smtp_server`` of tests/fixtures_smtp.py, with and without PIPELINING."""
    marker = request.node.get_closest_marker("smtp_server")
    options = {"pipelining": pipelining, **(marker.kwargs if marker else {})}
    async with RecordingServer(**options) as server:
        yield server


def message(n: int, recipient: str | None = None) -> Message:
    recipient = recipient or f"leser{n}@example.org"
    data = (
        f"From: {SENDER}\r\nTo: {recipient}\r\nSubject: Nachricht {n}\r\n"
        f"Message-ID: <{n}@kommune-digital.example>\r\n\r\nText {n}\r\n.Punkt\r\n"
    ).encode("ascii")
    return Message(SENDER, recipient, f"<{n}@kommune-digital.example>", data)


async def test_connections_are_pooled_and_reused(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=2)) as pool:
        results = await asyncio.gather(*(pool.send(message(n)) for n in range(10)))
    assert all(r.ok and r.code == 250 for r in results)
    assert [r.recipient for r in results] == [f"leser{n}@example.org" for n in range(10)]
    assert len(smtp_server.messages) == 10
    assert 1 <= smtp_server.connections <= 2


async def test_exact_bytes_arrive(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings()) as pool:
        await pool.send(message(1))
    assert smtp_server.messages == [(SENDER, ["leser1@example.org"], message(1).data)]


async def test_dots_and_line_ends_arrive_as_they_were(smtp_server: RecordingServer) -> None:
    """Lines starting with "." are stuffed on the wire and unstuffed by the server."""
    head = f"From: {SENDER}\r\nTo: leser1@example.org\r\nSubject: Punkte\r\n\r\n"
    body = ".\r\n..\r\n.Punkt\r\nText\r\n.\r\n"
    crlf = Message(SENDER, "leser1@example.org", "<1@x>", (head + body).encode())
    # Bare line feeds, a lone CR and no line end at the end: sent with CRLF throughout.
    mixed = Message(SENDER, "leser2@example.org", "<2@x>", (head + "a\nb\rc\n.d").encode())
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        assert (await pool.send(crlf)).ok
        assert (await pool.send(mixed)).ok
    assert [data for _, _, data in smtp_server.messages] == [
        crlf.data,
        (head + "a\r\nb\r\nc\r\n.d\r\n").encode(),
    ]


@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b" "]), max_size=40))
def test_data_content_is_what_aiosmtplib_would_send(parts: list[bytes]) -> None:
    """The fast way to the DATA content gives aiosmtplib's bytes for any input."""
    data = b"".join(parts)
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert _content(data) == expected


async def test_pipelined_commands_go_out_together() -> None:
    """To a server that offers PIPELINING, MAIL, RCPT and DATA are written at once.

    This server answers none of them until it has all three: a client that waits for
    each reply before the next command runs into its timeout.
    """
    received: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 localhost ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-localhost\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        group = b""
        while not group.endswith(b"DATA\r\n"):
            line = await reader.readline()
            if not line:  # the client gave up waiting
                writer.close()
                return
            group += line
        received.append(group)
        writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
        received.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 2.0.0 Ok: queued\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 2.0.0 Bye\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, RecordingServer() as unused:
        settings = unused.settings(port=port, timeout=2, pool_size=1)
        async with SmtpPool(settings) as pool:
            result = await pool.send(message(1))
    assert (result.ok, result.code, result.reply) == (True, 250, "2.0.0 Ok: queued")
    assert received == [
        f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<leser1@example.org>\r\nDATA\r\n".encode(),
        message(1).data.replace(b"\r\n.Punkt", b"\r\n..Punkt") + b".\r\n",
    ]


async def test_connection_is_renewed_after_messages_per_connection(
    smtp_server: RecordingServer,
) -> None:
    async with SmtpPool(smtp_server.settings(messages_per_connection=3)) as pool:
        for n in range(7):
            assert (await pool.send(message(n))).ok
    assert smtp_server.connections == 3


@pytest.mark.smtp_server(
    refuse={"bad@example.org": "550 5.1.1 No such user"},
    temp_fail={"later@example.org": "451 4.3.0 Try again"},
)
async def test_refused_recipients_are_results(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        refused = await pool.send(message(1, "bad@example.org"))
        deferred = await pool.send(message(2, "later@example.org"))
        accepted = await pool.send(message(3))
    assert (refused.ok, refused.code, refused.temporary) == (False, 550, False)
    assert refused.reply == "5.1.1 No such user"
    assert refused.recipient == "bad@example.org"
    assert (deferred.ok, deferred.code, deferred.temporary) == (False, 451, True)
    assert accepted.ok
    # The refusals were reset on the same connection, which then carried the next message.
    assert smtp_server.connections == 1
    assert [rcpts for _, rcpts, _ in smtp_server.messages] == [["leser3@example.org"]]


@pytest.mark.smtp_server(
    refuse={
        "full@example.org": "552 5.2.2 Mailbox full",
        "moved@example.org": "550 5.1.6 Recipient moved",
        "grey@example.org": "450 4.7.1 Greylisted, try again later",
    }
)
async def test_recipient_refusals_stay_results(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        full = await pool.send(message(1, "full@example.org"))
        moved = await pool.send(message(2, "moved@example.org"))
        grey = await pool.send(message(3, "grey@example.org"))
    assert [(r.ok, r.code, r.temporary) for r in (full, moved, grey)] == [
        (False, 552, False),
        (False, 550, False),
        (False, 450, True),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "550 5.7.1 Sender not allowed",
        "451 4.3.0 Sender domain has no MX, try later",
        "530 5.7.0 Authentication required",
        "553 Sender address rejected",
    ],
)
async def test_refused_mail_from_raises_sender_refused(reply: str, pipelining: bool) -> None:
    async with RecordingServer(refuse_sender=reply, pipelining=pipelining) as server:
        async with SmtpPool(server.settings(pool_size=1)) as pool:
            with pytest.raises(SenderRefused) as info:
                await pool.send(message(1))
            code, _, text = reply.partition(" ")
            assert (info.value.code, info.value.reply) == (int(code), text)
            assert isinstance(info.value, SendError)
            assert info.value.temporary == reply.startswith("4")
            assert "MAIL FROM" in str(info.value) and SENDER in str(info.value)
            # The transaction was reset and the connection kept for the next message.
            assert server.handler.resets == 1
            server.handler.refuse_sender = None
            assert (await pool.send(message(2))).ok
        assert server.connections == 1
        assert [data for _, _, data in server.messages] == [message(2).data]


@pytest.mark.parametrize(
    "reply", ["530 5.7.0 Authentication required", "530 Must issue a STARTTLS command first"]
)
async def test_authentication_required_at_rcpt_raises_sender_refused(
    reply: str, pipelining: bool
) -> None:
    async with RecordingServer(
        refuse={"leser1@example.org": reply}, pipelining=pipelining
    ) as server:
        async with SmtpPool(server.settings(pool_size=1)) as pool:
            with pytest.raises(SenderRefused) as info:
                await pool.send(message(1))
            assert info.value.code == int(reply[:3])
            assert "RCPT TO" in str(info.value)
            assert server.handler.resets == 1
            assert (await pool.send(message(2))).ok
        assert server.connections == 1


@pytest.mark.parametrize(
    "reply",
    ["554 5.7.1 Relay access denied", "550 5.7.1 Recipient address rejected: Access denied"],
)
async def test_policy_refusal_at_rcpt_is_a_policy_result(reply: str, pipelining: bool) -> None:
    async with RecordingServer(
        refuse={"leser1@example.org": reply}, pipelining=pipelining
    ) as server:
        async with SmtpPool(server.settings(pool_size=1)) as pool:
            refused = await pool.send(message(1))
            assert (refused.ok, refused.code, refused.policy) == (False, int(reply[:3]), True)
            assert server.handler.resets == 1
            assert (await pool.send(message(2))).ok
        assert server.connections == 1


@pytest.mark.smtp_server(refuse_data="554 5.7.1 Message rejected by policy")
async def test_policy_refusal_at_data_raises_sender_refused(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        with pytest.raises(SenderRefused) as info:
            await pool.send(message(1))
        assert (info.value.code, info.value.temporary) == (554, False)
        assert "DATA" in str(info.value)
        smtp_server.handler.refuse_data = "550 5.6.0 Content rejected"
        content = await pool.send(message(2))  # not a policy code: about this message
        assert (content.ok, content.code, content.temporary) == (False, 550, False)
    assert smtp_server.connections == 1 and smtp_server.messages == []


def utf8_message(n: int, recipient: str = "jürgen@example.org") -> Message:
    """A message whose envelope recipient and To header are UTF-8 (RFC 6531, 6532)."""
    data = (
        f"From: {SENDER}\r\nTo: Jürgen <{recipient}>\r\nSubject: Nachricht {n}\r\n"
        f"Message-ID: <{n}@kommune-digital.example>\r\n\r\nText {n}\r\n"
    ).encode()
    return Message(SENDER, recipient, f"<{n}@kommune-digital.example>", data)


@pytest.mark.smtp_server(smtputf8=True)
async def test_utf8_message_goes_with_smtputf8_and_8bitmime(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1, smtputf8=True)) as pool:
        assert (await pool.send(message(1))).ok
        assert (await pool.send(utf8_message(2))).ok
        assert (await pool.send(message(3))).ok
    assert smtp_server.messages == [
        (SENDER, ["leser1@example.org"], message(1).data),
        (SENDER, ["jürgen@example.org"], utf8_message(2).data),
        (SENDER, ["leser3@example.org"], message(3).data),
    ]
    ascii_before, utf8, ascii_after = smtp_server.mail_options
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(utf8)
    # Only the message that needs them carries them.
    for options in (ascii_before, ascii_after):
        assert not {"SMTPUTF8", "BODY=8BITMIME"} & set(options)
    assert smtp_server.connections == 1


async def test_utf8_message_to_a_server_without_smtputf8_raises_sender_refused(
    smtp_server: RecordingServer,
) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1, smtputf8=True)) as pool:
        assert (await pool.send(message(1))).ok
        with pytest.raises(SenderRefused) as info:
            await pool.send(utf8_message(2))
        reason = str(info.value)
        assert "does not offer the SMTPUTF8 extension" in reason
        assert "jürgen@example.org" in reason and "smtp.smtputf8 = false" in reason
        # Nothing of it went on the wire: the connection carries the next message.
        assert (await pool.send(message(3))).ok
    assert smtp_server.connections == 1 and smtp_server.handler.resets == 0
    assert [rcpts for _, rcpts, _ in smtp_server.messages] == [
        ["leser1@example.org"],
        ["leser3@example.org"],
    ]


@pytest.mark.smtp_server(smtputf8=True)
async def test_unsendable_address_is_a_permanent_result(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        # A lone surrogate: not even UTF-8 can put it on the wire.
        unsendable = Message(SENDER, "j\udcfcrgen@example.org", "<1@x>", message(1).data)
        result = await pool.send(unsendable)
        assert (result.ok, result.code, result.temporary) == (False, None, False)
        assert (await pool.send(message(2))).ok
    assert smtp_server.connections == 1
    assert len(smtp_server.messages) == 1


async def test_unsendable_sender_raises_sender_refused(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        unsendable = Message("jürgen@example.org", "leser1@example.org", "<1@x>", b"x\r\n")
        with pytest.raises(SenderRefused, match="SMTPUTF8"):  # the server does not offer it
            await pool.send(unsendable)
        assert (await pool.send(message(2))).ok
    assert smtp_server.connections == 1


@pytest.mark.smtp_server(disconnect_after=2)
async def test_dropped_connection_raises_and_next_send_reconnects(
    smtp_server: RecordingServer,
) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        assert (await pool.send(message(1))).ok
        assert (await pool.send(message(2))).ok
        with pytest.raises(TransportUnavailable) as info:
            await pool.send(message(3))
        assert info.value.temporary and isinstance(info.value, ConnectionError)
        assert (await pool.send(message(4))).ok
    assert smtp_server.connections == 2
    assert [data for _, _, data in smtp_server.messages] == [message(n).data for n in (1, 2, 4)]


@pytest.mark.smtp_server(reply_421_after=1)
async def test_421_reconnects_and_tries_the_message_once_more(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        assert (await pool.send(message(1))).ok
        assert (await pool.send(message(2))).ok  # after a 421, on a new connection
        assert (await pool.send(message(3))).ok
    assert smtp_server.connections == 2
    assert [data for _, _, data in smtp_server.messages] == [message(n).data for n in (1, 2, 3)]


@pytest.mark.smtp_server(temp_fail={"leser2@example.org": "421 4.7.0 Try again later, closing"})
async def test_a_second_421_is_a_temporary_result(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        assert (await pool.send(message(1))).ok
        closing = await pool.send(message(2))
        assert (closing.ok, closing.code, closing.temporary) == (False, 421, True)
        assert (await pool.send(message(3))).ok
    assert smtp_server.handler.rcpt_seen.count("leser2@example.org") == 2
    assert smtp_server.connections == 3  # each 421 ended its connection
    assert len(smtp_server.messages) == 2


async def test_idle_connection_closed_by_the_server_is_replaced(
    smtp_server: RecordingServer,
) -> None:
    async with SmtpPool(smtp_server.settings(pool_size=1)) as pool:
        assert (await pool.send(message(1))).ok
        smtp_server.drop_connections()  # the client has not noticed yet
        assert (await pool.send(message(2))).ok
    assert smtp_server.connections == 2
    assert len(smtp_server.messages) == 2


@pytest.mark.smtp_server(delay=2)
async def test_slow_server_times_out(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(timeout=0.2)) as pool:
        with pytest.raises(SendTimeout) as info:
            await pool.send(message(1))
    assert isinstance(info.value, TimeoutError) and info.value.temporary


@pytest.mark.smtp_server(tls="starttls", auth={"digest": "geheim"})
async def test_starttls_and_login(smtp_server: RecordingServer) -> None:
    settings = smtp_server.settings(
        security="starttls", validate_certs=False, username="digest", password="geheim"
    )
    async with SmtpPool(settings) as pool:
        assert (await pool.send(message(1))).ok
    assert len(smtp_server.messages) == 1

    async with SmtpPool(replace(settings, password="falsch")) as pool:
        with pytest.raises(TransportUnavailable) as info:
            await pool.send(message(2))
    assert info.value.code == 535 and not info.value.temporary
    assert isinstance(info.value, RelayConfigError)
    assert "DIGEST_SMTP_PASSWORD" in str(info.value) and "falsch" not in str(info.value)

    async with SmtpPool(replace(settings, validate_certs=True)) as pool:
        with pytest.raises(RelayConfigError) as cert:  # the certificate is self-signed
            await pool.send(message(3))
    assert "certificate" in str(cert.value) and "smtp.validate_certs" in str(cert.value)
    assert not cert.value.temporary
    assert len(smtp_server.messages) == 1


async def test_starttls_not_offered_names_the_setting(smtp_server: RecordingServer) -> None:
    async with SmtpPool(smtp_server.settings(security="starttls")) as pool:
        with pytest.raises(RelayConfigError) as info:
            await pool.send(message(1))
    assert "does not offer STARTTLS" in str(info.value) and "smtp.security" in str(info.value)
    assert not info.value.temporary and smtp_server.messages == []


@pytest.mark.smtp_server(tls="implicit")
async def test_implicit_tls(smtp_server: RecordingServer) -> None:
    settings = smtp_server.settings(security="tls", validate_certs=False)
    async with SmtpPool(settings) as pool:
        assert (await pool.send(message(1))).ok
        assert (await pool.send(message(2))).ok
    assert smtp_server.connections == 1
    async with SmtpPool(replace(settings, validate_certs=True)) as pool:
        with pytest.raises(RelayConfigError) as info:
            await pool.send(message(3))
    assert "certificate" in str(info.value) and not info.value.temporary
    assert len(smtp_server.messages) == 2


async def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RecordingServer() as server:
        settings = server.settings(port=port, timeout=2)
    async with SmtpPool(settings) as pool:
        with pytest.raises(RelayConfigError) as info:
            await pool.send(message(1))
    # nothing listens there: our configuration, not a temporary failure
    assert "refused the connection" in str(info.value) and not info.value.temporary
    assert "check smtp.host and smtp.port" in str(info.value)


async def test_closed_pool_refuses(smtp_server: RecordingServer) -> None:
    pool = SmtpPool(smtp_server.settings())
    await pool.close()
    with pytest.raises(TransportUnavailable):
        await pool.send(message(1))


async def test_dry_run_records_and_sends_nothing() -> None:
    transport = DryRunTransport()
    result = await transport.send(message(1))
    await transport.close()
    assert (result.ok, result.code, result.reply) == (True, 250, "dry run")
    assert transport.messages == [message(1)]


async def test_capture_server_writes_eml_files(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    sent = [message(n, f"leser+{n}/x@example.org") for n in range(3)]
    clock = lambda: datetime(2025, 1, 27, 7, 0, 5, tzinfo=UTC)  # noqa: E731
    async with (
        CaptureServer(outbox, clock=clock) as server,
        SmtpPool(server.settings()) as pool,
    ):
        for msg in sent:
            assert (await pool.send(msg)).ok
    names = sorted(p.name for p in outbox.iterdir())
    assert names == [f"20250127-070005-000{n + 1}-leser+{n}_x@example.org.eml" for n in range(3)]
    for msg, captured in zip(sent, server.messages, strict=True):
        assert captured.path.read_bytes() == captured.data == msg.data
        assert (captured.mail_from, captured.rcpt_tos) == (SENDER, (msg.recipient,))
        parsed = email.message_from_bytes(captured.data, policy=email.policy.strict)
        assert parsed["Message-ID"] == msg.message_id


def test_tokens_round_trip() -> None:
    token = tokens.make_token("geheim", "unsubscribe", 4711, "wochenueberblick")
    assert tokens.read_token("geheim", "unsubscribe", token) == (4711, "wochenueberblick")
    assert token.isascii() and all(c.isalnum() or c in "-_." for c in token)


def _flip_last(token: str) -> str:
    return token[:-1] + ("B" if token[-1] == "A" else "A")


@pytest.mark.parametrize(
    ("secret", "purpose", "change"),
    [
        ("geheim", "unsubscribe", _flip_last),
        ("geheim", "unsubscribe", lambda t: "x" + t),
        ("anderes", "unsubscribe", str),
        ("geheim", "preferences", str),
        ("geheim", "unsubscribe", lambda t: "garbage"),
        ("geheim", "unsubscribe", lambda t: ""),
    ],
    ids=["tampered", "prefixed", "other-secret", "other-purpose", "garbage", "empty"],
)
def test_tampered_tokens_fail(secret: str, purpose: str, change: Callable[[str], str]) -> None:
    token = tokens.make_token("geheim", "unsubscribe", 4711, "wochenueberblick")
    with pytest.raises(TokenError):
        tokens.read_token(secret, purpose, change(token))


def test_token_with_unexpected_payload_fails() -> None:
    from itsdangerous import URLSafeSerializer

    forged = URLSafeSerializer("geheim", salt="digest.unsubscribe").dumps({"id": 1})
    with pytest.raises(TokenError):
        tokens.read_token("geheim", "unsubscribe", forged)


def test_link_urls(demo_settings: Settings) -> None:
    unsubscribe = tokens.unsubscribe_url(demo_settings, "wochenueberblick", 7)
    preferences = tokens.preferences_url(demo_settings, "wochenueberblick", 7)
    mailto = tokens.unsubscribe_mailto(demo_settings, "wochenueberblick", 7)
    base = "http://127.0.0.1:8000"
    assert unsubscribe.startswith(f"{base}/unsubscribe/")
    assert preferences.startswith(f"{base}/preferences/")
    secret = demo_settings.secret_key
    assert tokens.read_token(secret, "preferences", preferences.rsplit("/", 1)[1]) == (
        7,
        "wochenueberblick",
    )
    with pytest.raises(TokenError):  # an unsubscribe token is no preferences token
        tokens.read_token(secret, "preferences", unsubscribe.rsplit("/", 1)[1])
    assert mailto.startswith("mailto:newsletter@kommune-digital.example?subject=unsubscribe%20")
